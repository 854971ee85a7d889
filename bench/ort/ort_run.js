// ort_run.js - ONNX Runtime's side of bench/compare.py: time a model, or run it once.
//
//   node bench/ort/ort_run.js MODEL.onnx --threads T --batch N --iters I --warmup W
//   node bench/ort/ort_run.js MODEL.onnx --threads T --check IN.npy OUT.npy
//
// ONNX Runtime's CPU build (npm onnxruntime-node, see package.json) with intraOpNumThreads = T,
// one inter-op thread, sequential execution and all graph optimisations. Timing: W untimed
// runs, then I timed runs of session.run on a seeded random input [N,3,H,W] (H, W from the
// model; batch is the model's dynamic axis); the last line is
//     median_ms=X peak_rss_mb=Y
// (Y: process.resourceUsage().maxRSS, the peak resident memory of the whole node process).
// --check runs the model once on IN.npy ([N,3,H,W] float32) and writes its output as OUT.npy.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

function usage(message) {
  process.stderr.write(`ort_run: ${message}\n` +
    'usage: node ort_run.js MODEL.onnx --threads T (--batch N --iters I --warmup W | ' +
    '--check IN.npy OUT.npy)\n');
  process.exit(2);
}

function parseArgs(argv) {
  const args = { model: null, threads: 1, batch: 1, iters: 20, warmup: 2, check: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const int = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) usage(`${a}: not a count: '${argv[i]}'`);
      return v;
    };
    if (a === '--threads') args.threads = int();
    else if (a === '--batch') args.batch = int();
    else if (a === '--iters') args.iters = int();
    else if (a === '--warmup') args.warmup = int();
    else if (a === '--check') {
      if (i + 2 >= argv.length) usage('--check needs IN.npy OUT.npy');
      args.check = [argv[++i], argv[++i]];
    } else if (!a.startsWith('--') && args.model === null) args.model = a;
    else usage(`unknown argument '${a}'`);
  }
  if (args.model === null) usage('no model');
  if (args.threads < 1 || args.batch < 1 || args.iters < 1) usage('threads, batch, iters >= 1');
  return args;
}

// .npy (version 1-3, little-endian float32, C order) -> {shape, data: Float32Array}
function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', start, start + headerLen);
  if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header)) {
    throw new Error(`${file}: expected little-endian float32 in C order, header ${header.trim()}`);
  }
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!shapeText) throw new Error(`${file}: no shape in header ${header.trim()}`);
  const shape = shapeText[1].split(',').map((s) => s.trim()).filter((s) => s).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const bytes = buf.subarray(start + headerLen, start + headerLen + 4 * count);
  if (bytes.length !== 4 * count) throw new Error(`${file}: truncated (${shape} floats)`);
  const data = new Float32Array(count);
  new Uint8Array(data.buffer).set(bytes);    // copy: the file's bytes need not be 4-aligned
  return { shape, data };
}

function writeNpy(file, shape, data) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')},), }`;
  const total = 10 + header.length + 1;                // magic, version, length, header, '\n'
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'), body]));
}

function median(values) {
  const v = [...values].sort((a, b) => a - b);
  const n = v.length;
  return n % 2 ? v[(n - 1) / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// xorshift32: a fixed input; speed does not depend on the values
function randomInput(count) {
  const data = new Float32Array(count);
  let state = 12345;
  for (let i = 0; i < count; i++) {
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    data[i] = (state / 4294967296) * 4 - 2;
  }
  return data;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const session = await ort.InferenceSession.create(args.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: args.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const inputName = session.inputNames[0];
  const outputName = session.outputNames[0];

  if (args.check) {
    const x = readNpy(args.check[0]);
    const out = await session.run({ [inputName]: new ort.Tensor('float32', x.data, x.shape) });
    writeNpy(args.check[1], out[outputName].dims, out[outputName].data);
    return;
  }

  // H, W from the model's input (dims after the dynamic batch are fixed numbers)
  const dims = session.inputMetadata ? session.inputMetadata[0].shape : null;
  const [channels, height, width] = dims && dims.length === 4 && dims.slice(1).every(Number.isInteger)
    ? dims.slice(1) : [3, 224, 224];
  const shape = [args.batch, channels, height, width];
  const x = new ort.Tensor('float32', randomInput(shape.reduce((a, b) => a * b, 1)), shape);
  const times = [];
  for (let it = 0; it < args.warmup + args.iters; it++) {
    const start = process.hrtime.bigint();
    await session.run({ [inputName]: x });
    if (it >= args.warmup) times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  const version = require(path.join(path.dirname(require.resolve('onnxruntime-node')), '..',
    'package.json')).version;
  console.log(`onnxruntime-node ${version}, ${args.threads} threads, batch ${args.batch}, ` +
    `input ${shape.join('x')}, ${args.iters} timed runs after ${args.warmup} warm-up`);
  const peakMb = process.resourceUsage().maxRSS / 1024;   // maxRSS is in KiB
  console.log(`median_ms=${median(times).toFixed(3)} peak_rss_mb=${peakMb.toFixed(1)}`);
}

main().catch((e) => {
  process.stderr.write(`ort_run: ${e && e.message ? e.message : e}\n`);
  process.exit(1);
});
