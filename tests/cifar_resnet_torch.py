"""cifar_resnet_torch.py - the CIFAR ResNet of He et al. 2016, section 4.2, in PyTorch.

Written from the paper's description, for tests (run with /usr/bin/python3, PyTorch 1.13):
- input 32x32; a 3x3 conv with 16 filters; then three stages of n residual blocks each on feature
  maps of 32x32, 16x16 and 8x8 with 16, 32 and 64 filters; depth = 6n + 2 (20, 32, 44, 56, 110);
- a block is conv3x3 - BN - ReLU - conv3x3 - BN, plus the shortcut, then ReLU; the first conv of
  the first block of stages 2 and 3 has stride 2;
- shortcut option A: identity, and where the shape changes the input is subsampled with stride 2
  (x[:, :, ::2, ::2]) and zero-padded in channels by planes // 4 on both sides (16 -> 32 -> 64);
- global average pooling, then a fully connected layer to the classes.

Module names match the published checkpoints (akamaster/pytorch_resnet_cifar10) once their
`module.` prefix is stripped: conv1, bn1, layer{1,2,3}.{b}.{conv1,bn1,conv2,bn2}, linear; and the
parameter-less modules are named as the graph nodes in notes/naming.md (relu, layerS.B.relu,
layerS.B.shortcut, avgpool, flatten), so forward hooks see the same names as cnnscope's dump.

    model = cifar_resnet_from_state_dict(load_checkpoint("resnet20-12fca82f.th"))
    logits = model(x)        # x [N,3,32,32], normalised; logits [N,10]
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

STAGE_PLANES = (16, 32, 64)


class ShortcutA(nn.Module):
    """Option A: subsample by `stride`, zero-pad `pad` channels before and after."""

    def __init__(self, stride, pad):
        super().__init__()
        self.stride = stride
        self.pad = pad

    def forward(self, x):                                    # x [N,C,H,W]
        x = x[:, :, ::self.stride, ::self.stride]            # [N,C,H/2,W/2]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))   # [N,C+2*pad,H/2,W/2]


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()              # not in place: hooks keep what they see
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            # Option A only knows "half the size, double the channels".
            assert stride == 2 and planes == 2 * in_planes, (in_planes, planes, stride)
            self.shortcut = ShortcutA(stride, planes // 4)

    def forward(self, x):                                   # x [N,C,H,W]
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))                     # [N,planes,H/stride,W/stride]
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class CifarResNet(nn.Module):
    def __init__(self, depth, num_classes=10, in_channels=3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError("CIFAR ResNet depth must be 6n+2 with n >= 1, got %d" % depth)
        blocks = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, STAGE_PLANES[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_PLANES[0])
        self.relu = nn.ReLU()
        in_planes = STAGE_PLANES[0]
        for stage, planes in enumerate(STAGE_PLANES, start=1):
            layer = []
            for b in range(blocks):
                stride = 2 if (b == 0 and stage > 1) else 1
                layer.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            setattr(self, "layer%d" % stage, nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(STAGE_PLANES[-1], num_classes)

    def forward(self, x):                                   # x [N,C,32,32]
        out = self.relu(self.bn1(self.conv1(x)))            # [N,16,32,32]
        out = self.layer1(out)                              # [N,16,32,32]
        out = self.layer2(out)                              # [N,32,16,16]
        out = self.layer3(out)                              # [N,64,8,8]
        out = self.flatten(self.avgpool(out))               # [N,64]
        return self.linear(out)                             # [N,classes]


def load_checkpoint(path):
    """The state dict of a checkpoint file: legacy or zip, bare or {'state_dict': ...}, with the
    DataParallel `module.` prefix stripped."""
    obj = torch.load(path, map_location="cpu")
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def cifar_resnet_from_state_dict(sd):
    """Builds the model the state dict describes (depth, input channels, classes) and loads it
    strictly, in eval mode."""
    blocks = 0
    while "layer1.%d.conv1.weight" % blocks in sd:
        blocks += 1
    if blocks == 0:
        raise ValueError("not a CIFAR ResNet state dict: no layer1.0.conv1.weight")
    model = CifarResNet(6 * blocks + 2, num_classes=sd["linear.weight"].shape[0],
                        in_channels=sd["conv1.weight"].shape[1])
    model.load_state_dict(sd, strict=True)
    return model.eval()
