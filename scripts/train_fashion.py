#!/usr/bin/python3
"""train_fashion.py - trains cnnscope's default models on Fashion-MNIST.

Run with /usr/bin/python3 (PyTorch). CPU only, reproducible from --seed (the same seed and
--threads give identical weights). --arch picks the network; each has its own default epochs,
learning rate and output names (build/fashion_<arch>.pth, weights/fashion_<arch>.log/.json):

    /usr/bin/python3 scripts/train_fashion.py --epochs 6 \
        --log weights/fashion_resnet20.log --json weights/fashion_resnet20.json \
        --out build/fashion_resnet20.pth
    /usr/bin/python3 scripts/train_fashion.py --arch alexnet --seed 1 --threads 1   # 8 epochs
    /usr/bin/python3 scripts/train_fashion.py --arch vgg --seed 1 --threads 1       # 4 epochs

(The committed weights/fashion_alexnet and fashion_vgg were made by exactly these two lines:
90.43 % and 91.19 % top-1.)

Models (all take 28x28x1 and give 10 logits; scripts/convert.py recognises each by its keys):

  resnet20 (default; converts as `cifar_resnet20`): ResNet-20 of He et al. 2016, sec. 4.2 (3x3
    convs; 3 stages of 3 BasicBlocks with 16/32/64 channels; option-A shortcut: stride-2
    subsampling plus zero channel padding; global average pool; 10-way linear), with 1 input
    channel. Module names follow akamaster/pytorch_resnet_cifar10 (conv1, bn1,
    layerS.B.{conv1,bn1,conv2,bn2,shortcut}, linear).
  alexnet (converts as `fashion_alexnet`): AlexNet-style, laid out like torchvision's alexnet
    (features.N, avgpool, classifier.N): a 7x7 first conv (its 32 filters look like edge and
    blob detectors), then 5x5 and two 3x3 convs with max pools, no batch norm; a two-layer
    fully connected head with dropout 0.5.
  vgg (converts as `fashion_vgg`): VGG-style, laid out like torchvision's vgg*_bn: three stages
    of two 3x3 convs (32, 64, 96 channels), each conv followed by batch norm and relu, each
    stage by a 2x2 max pool; a one-hidden-layer head with dropout 0.5.
  Both keep torchvision's `avgpool` (AdaptiveAvgPool2d(3)); at 28x28 input the features are
  already 3x3, so it is the identity, but it keeps the structure and the names torchvision's.

Input: 28x28 grayscale, pixels/255, then (x - MEAN) / STD. Training: SGD (momentum 0.9,
Nesterov, weight decay 5e-4), OneCycle LR, batch 128, random crop (padding 2) + horizontal flip.
The data is read straight from Debian's dataset-fashion-mnist IDX files; the test set is the
same pixels that scripts/fashion_to_folder.py writes as PNG (PNG is lossless).
--limit N (alias --train-limit) and --test-limit N use only the first N images, for timing and
reproducibility runs (tests/test_train_repro.sh).
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

# Without this, libgomp threads spin while waiting at each op's barrier; on a shared, busy
# machine a spinning thread steals the core its partner needs (measured: 2-10x slower steps).
# Must be set before torch (and with it libgomp) is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
MEAN = 0.2860   # mean of the 60,000 training pixels / 255
STD = 0.3530    # their standard deviation
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


# ----------------------------------------------------------------------------------------------
# Model (N,C,H,W; 28x28 input -> stages at 28x28x16, 14x14x32, 7x7x64)

class ShortcutA(nn.Module):
    """Option-A shortcut: no parameters. [N,C,H,W] -> [N,C+2*pad,H/2,W/2]."""

    def __init__(self, pad_channels):
        super().__init__()
        self.pad_channels = pad_channels

    def forward(self, x):
        # subsample with stride 2, then zero-pad the channels equally on both sides
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad_channels, self.pad_channels))


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = ShortcutA(planes // 4)
        else:
            self.shortcut = nn.Sequential()   # identity, as in akamaster's code

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage=3, in_channels=1, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes, planes, blocks, stride):
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x):                       # [N,1,28,28]
        out = F.relu(self.bn1(self.conv1(x)))   # [N,16,28,28]
        out = self.layer1(out)                  # [N,16,28,28]
        out = self.layer2(out)                  # [N,32,14,14]
        out = self.layer3(out)                  # [N,64,7,7]
        out = F.adaptive_avg_pool2d(out, 1)     # [N,64,1,1]
        out = torch.flatten(out, 1)             # [N,64]
        return self.linear(out)                 # [N,10]


def resnet20(in_channels=1, num_classes=10):
    return CifarResNet(3, in_channels, num_classes)


class FashionAlexNet(nn.Module):
    """AlexNet-style; module names as torchvision's alexnet (features.N, avgpool, classifier.N)."""

    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 7, padding=3),   # 0   [N,32,28,28]
            nn.ReLU(inplace=True),                      # 1
            nn.MaxPool2d(2, 2),                         # 2   [N,32,14,14]
            nn.Conv2d(32, 64, 5, padding=2),            # 3   [N,64,14,14]
            nn.ReLU(inplace=True),                      # 4
            nn.MaxPool2d(2, 2),                         # 5   [N,64,7,7]
            nn.Conv2d(64, 96, 3, padding=1),            # 6   [N,96,7,7]
            nn.ReLU(inplace=True),                      # 7
            nn.Conv2d(96, 64, 3, padding=1),            # 8   [N,64,7,7]
            nn.ReLU(inplace=True),                      # 9
            nn.MaxPool2d(2, 2),                         # 10  [N,64,3,3]
        )
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))     # identity at 28x28 input
        self.classifier = nn.Sequential(
            nn.Dropout(0.25),                           # 0
            nn.Linear(64 * 3 * 3, 256),                 # 1   [N,256]
            nn.ReLU(inplace=True),                      # 2
            nn.Dropout(0.25),                           # 3
            nn.Linear(256, 256),                        # 4   [N,256]
            nn.ReLU(inplace=True),                      # 5
            nn.Linear(256, num_classes),                # 6   [N,10]
        )
        # He init (torchvision keeps PyTorch's default, which shrinks the signal ~2.5x per layer:
        # without batch norm, the first epoch then mostly waits for it to grow back).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # The first layer starts near zero, so that what it ends up showing is what training put
        # there (smooth edges and blobs), not the He-init noise that 8 epochs do not wash out.
        nn.init.normal_(self.features[0].weight, std=0.01)

    def forward(self, x):                       # [N,1,28,28]
        x = self.avgpool(self.features(x))      # [N,64,3,3]
        return self.classifier(torch.flatten(x, 1))


class FashionVGG(nn.Module):
    """VGG-style with batch norm; module names as torchvision's vgg*_bn (features.N with the
    batch norm at its own index, avgpool, classifier.N)."""

    def __init__(self, in_channels=1, num_classes=10, stages=((32, 32), (64, 64), (96, 96))):
        super().__init__()
        layers, c = [], in_channels
        for widths in stages:           # 28 -> 14 -> 7 -> 3
            for k in widths:
                layers += [nn.Conv2d(c, k, 3, padding=1), nn.BatchNorm2d(k), nn.ReLU(inplace=True)]
                c = k
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)          # [N,96,3,3]
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))     # identity at 28x28 input
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),                            # 0
            nn.Linear(c * 3 * 3, 256),                  # 1   [N,256]
            nn.ReLU(inplace=True),                      # 2
            nn.Dropout(0.5),                            # 3
            nn.Linear(256, num_classes),                # 4   [N,10]
        )
        for m in self.modules():        # as torchvision's VGG
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):                       # [N,1,28,28]
        x = self.avgpool(self.features(x))      # [N,96,3,3]
        return self.classifier(torch.flatten(x, 1))


# --arch -> how to build it, its training defaults and the first log line's description.
ARCHS = {
    "resnet20": {"build": resnet20, "epochs": 6, "lr": 0.2,
                 "title": "ResNet-20 (cifar_resnet20, option-A shortcut)"},
    "alexnet": {"build": FashionAlexNet, "epochs": 8, "lr": 0.05,
                "title": "AlexNet-style (fashion_alexnet: 7x7 first conv, no batch norm)"},
    "vgg": {"build": FashionVGG, "epochs": 4, "lr": 0.1,
            "title": "VGG-style (fashion_vgg: 3x3 conv + batch norm stacks)"},
}


# ----------------------------------------------------------------------------------------------
# Data

def read_idx_gz(path):
    """Returns a uint8 tensor with the dims of a gzip'd IDX (unsigned byte) file."""
    if not os.path.isfile(path):
        sys.exit("train_fashion: %s: not found (install dataset-fashion-mnist, or pass --data DIR)"
                 % path)
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, = struct.unpack_from(">I", raw, 0)
    if magic >> 8 != 0x08:
        sys.exit("train_fashion: %s: IDX magic 0x%08x is not unsigned byte data" % (path, magic))
    ndim = magic & 0xFF
    dims = struct.unpack_from(">%dI" % ndim, raw, 4)
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def load_split(data_dir, prefix):
    """Returns (images [N,28,28] uint8, labels [N] int64)."""
    images = read_idx_gz(os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz"))
    labels = read_idx_gz(os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz")).long()
    assert images.shape[0] == labels.shape[0], (images.shape, labels.shape)
    return images, labels


def normalise(images_u8, memory_format=torch.contiguous_format):
    """uint8 [N,H,W] -> float [N,1,H,W], pixels/255 then (x - MEAN) / STD."""
    x = ((images_u8.float() / 255.0 - MEAN) / STD).unsqueeze(1)
    return x.contiguous(memory_format=memory_format)


def augment(padded_u8, pad, generator):
    """Random crop (from images padded by `pad`) + random horizontal flip, as one gather.

    padded_u8 [B,H+2p,W+2p] -> [B,H,W]; offsets and flips come from `generator`.
    """
    batch, padded_h, padded_w = padded_u8.shape
    h, w = padded_h - 2 * pad, padded_w - 2 * pad
    off_y = torch.randint(0, 2 * pad + 1, (batch, 1), generator=generator)
    off_x = torch.randint(0, 2 * pad + 1, (batch, 1), generator=generator)
    flip = torch.rand(batch, 1, generator=generator) < 0.5
    ramp_y = torch.arange(h).unsqueeze(0)
    ramp_x = torch.arange(w).unsqueeze(0)
    rows = off_y + ramp_y                                             # [B,H]
    cols = off_x + torch.where(flip, w - 1 - ramp_x, ramp_x)          # [B,W]
    index_b = torch.arange(batch).view(batch, 1, 1)
    return padded_u8[index_b, rows.unsqueeze(2), cols.unsqueeze(1)]  # [B,H,W]


# ----------------------------------------------------------------------------------------------
# Training

def evaluate(model, images, labels, memory_format, batch_size=250):
    """Returns (top-1 accuracy in percent, mean loss) on uint8 images [N,28,28]."""
    model.eval()
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            x = normalise(images[start:start + batch_size], memory_format)
            y = labels[start:start + batch_size]
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    return 100.0 * correct / images.shape[0], loss_sum / images.shape[0]


def main():
    ap = argparse.ArgumentParser(description="Train a default model (ResNet-20, AlexNet-style "
                                 "or VGG-style) on Fashion-MNIST")
    ap.add_argument("--arch", choices=list(ARCHS), default="resnet20",
                    help="network to train (default resnet20)")
    ap.add_argument("--epochs", type=int, help="default: resnet20 6, alexnet %d, vgg %d"
                    % (ARCHS["alexnet"]["epochs"], ARCHS["vgg"]["epochs"]))
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, help="peak learning rate (OneCycle); default: resnet20 "
                    "0.2, alexnet %g, vgg %g" % (ARCHS["alexnet"]["lr"], ARCHS["vgg"]["lr"]))
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--contiguous", action="store_true",
                    help="train in NCHW instead of channels_last (channels_last is ~25 %% faster "
                         "here on oneDNN; the saved weights are NCHW either way)")
    ap.add_argument("--train-limit", "--limit", type=int, default=0,
                    help="use only the first N training images (timing runs; 0 = all)")
    ap.add_argument("--test-limit", type=int, default=0,
                    help="evaluate on only the first N test images (quick runs; 0 = all)")
    ap.add_argument("--data", default=DEFAULT_DATA, help="directory of the *-ubyte.gz files")
    ap.add_argument("--out", help="default build/fashion_<arch>.pth; '' = do not save")
    ap.add_argument("--log", help="default weights/fashion_<arch>.log; '' = no log file")
    ap.add_argument("--json", help="default weights/fashion_<arch>.json; '' = no summary")
    args = ap.parse_args()
    arch = ARCHS[args.arch]
    if args.epochs is None:
        args.epochs = arch["epochs"]
    if args.lr is None:
        args.lr = arch["lr"]
    for option, folder, ext in (("out", "build", "pth"), ("log", "weights", "log"),
                                ("json", "weights", "json")):
        if getattr(args, option) is None:
            setattr(args, option, "%s/fashion_%s.%s" % (folder, args.arch, ext))

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)   # data order and augmentation

    for path in (args.out, args.log, args.json):
        if path and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    log_file = open(args.log, "w") if args.log else None

    def log(msg):
        print(msg, flush=True)
        if log_file:
            log_file.write(msg + "\n")
            log_file.flush()

    train_images, train_labels = load_split(args.data, "train")
    test_images, test_labels = load_split(args.data, "t10k")
    if args.train_limit:
        train_images = train_images[:args.train_limit]
        train_labels = train_labels[:args.train_limit]
    if args.test_limit:
        test_images = test_images[:args.test_limit]
        test_labels = test_labels[:args.test_limit]
    pad = 2
    train_padded = F.pad(train_images, (pad, pad, pad, pad))   # [N,32,32], zeros = black border

    model = arch["build"](in_channels=1, num_classes=10)
    memory_format = torch.contiguous_format if args.contiguous else torch.channels_last
    model = model.to(memory_format=memory_format)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                                weight_decay=args.weight_decay)
    n_train = train_images.shape[0]
    steps_per_epoch = (n_train + args.batch_size - 1) // args.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=0.25, div_factor=10.0, final_div_factor=100.0)

    log("train_fashion: %s, %d parameters" % (arch["title"], params))
    log("data: %s, %d train / %d test images, 28x28 grayscale" %
        (args.data, n_train, test_images.shape[0]))
    log("normalise: pixels/255, mean %.4f, std %.4f" % (MEAN, STD))
    log("settings: epochs %d, batch %d, SGD nesterov momentum 0.9, weight decay %g, OneCycle "
        "peak lr %g, crop pad %d + hflip, seed %d, threads %d (OMP_WAIT_POLICY=%s), %s, torch %s" %
        (args.epochs, args.batch_size, args.weight_decay, args.lr, pad, args.seed,
         args.threads, os.environ.get("OMP_WAIT_POLICY"),
         "NCHW" if args.contiguous else "channels_last", torch.__version__))

    t_start = time.time()
    for epoch in range(1, args.epochs + 1):
        t_epoch = time.time()
        model.train()
        order = torch.randperm(n_train, generator=generator)
        loss_sum, correct = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            x = normalise(augment(train_padded[idx], pad, generator), memory_format)  # [B,1,28,28]
            y = train_labels[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * y.shape[0]
            correct += (logits.argmax(1) == y).sum().item()
        train_seconds = time.time() - t_epoch
        test_acc, test_loss = evaluate(model, test_images, test_labels, memory_format)
        log("epoch %2d/%d  loss %.4f  train acc %.2f %%  test loss %.4f  test acc %.2f %%  "
            "lr %.4f  %.1f s (train %.1f s)" %
            (epoch, args.epochs, loss_sum / n_train, 100.0 * correct / n_train, test_loss,
             test_acc, scheduler.get_last_lr()[0], time.time() - t_epoch, train_seconds))
    seconds = time.time() - t_start

    # Final figure: the 10,000 test images (the same pixels as the PNG folder).
    model = model.to(memory_format=torch.contiguous_format)   # plain NCHW weights for convert.py
    test_acc, _ = evaluate(model, test_images, test_labels, torch.contiguous_format)
    test_acc = round(test_acc, 2)
    log("final: test top-1 %.2f %% on %d images, %d epochs, %.0f s total (%.1f min)" %
        (test_acc, test_images.shape[0], args.epochs, seconds, seconds / 60.0))

    if args.out:
        torch.save({"state_dict": model.state_dict(), "test_acc": test_acc}, args.out)
        log("saved %s" % args.out)
    if args.json:
        summary = {"test_top1": test_acc, "epochs": args.epochs, "seed": args.seed,
                   "mean": MEAN, "std": STD, "seconds": round(seconds, 1), "params": params,
                   "torch": torch.__version__, "batch_size": args.batch_size,
                   "peak_lr": args.lr, "weight_decay": args.weight_decay,
                   "threads": args.threads, "train_images": n_train}
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        os.replace(tmp, args.json)
        log("wrote %s" % args.json)
    if log_file:
        log_file.close()


if __name__ == "__main__":
    main()
