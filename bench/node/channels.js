'use strict';
// Node's side of loom's "channels" workload (bench/channels.lua): what a
// Node user reaches for where loom has MessageChannels and Channels.
//  - port pingpong: {seq, payload: "x"} round trips between two workers over
//    a MessageChannel (port1 in one worker, port2 in the other); 10,000
//    warm-up, 100,000 measured, latency per round trip in the pinger.
//  - one-way over a port: worker A posts 1,000,000 {id, name: "item",
//    tags: ["a", "b"]} to worker B over a MessageChannel, then null; B
//    replies {count, sum} to the main thread.  Time from the start signal
//    to the reply.
// Copied next to the reference's lib/ by bench/run.lua.
const { once } = require('node:events');
const { Worker, MessageChannel } = require('node:worker_threads');
const { now, summarize, emit, check } = require('./lib/common');

const QUICK = process.env.LOOM_BENCH_QUICK === '1';
const WARM = QUICK ? 1_000 : 10_000;
const N = QUICK ? 10_000 : 100_000;
const M = QUICK ? 100_000 : 1_000_000;

const PINGER = `
const { workerData, parentPort } = require('node:worker_threads');
const { performance } = require('node:perf_hooks');
const now = () => performance.now();
const { port, warm, n } = workerData;
function run(count) {
  return new Promise((resolve) => {
    const lat = new Float64Array(count);
    let i = 0, tSend = 0;
    const t0 = now();
    port.onmessage = (e) => {
      const t = now();
      const m = e.data;
      if (m.seq !== i || m.payload !== 'x') throw new Error('bad echo at ' + i);
      lat[i] = (t - tSend) * 1000;
      i++;
      if (i < count) { tSend = now(); port.postMessage({ seq: i, payload: 'x' }); }
      else { port.onmessage = null; resolve({ total_ms: now() - t0, lat: Array.from(lat) }); }
    };
    tSend = now();
    port.postMessage({ seq: 0, payload: 'x' });
  });
}
(async () => { await run(warm); const r = await run(n); parentPort.postMessage(r); port.close(); })();
`;
const ECHO = `
const { workerData } = require('node:worker_threads');
const { port } = workerData;
port.on('message', (m) => port.postMessage(m));
port.on('close', () => process.exit(0));
`;
const PRODUCER = `
const { workerData } = require('node:worker_threads');
const { port, go, m } = workerData;
go.once('message', () => {
  for (let i = 0; i < m; i++) port.postMessage({ id: i, name: 'item', tags: ['a', 'b'] });
  port.postMessage(null);
});
`;
const CONSUMER = `
const { workerData, parentPort } = require('node:worker_threads');
const { port } = workerData;
let count = 0, sum = 0;
port.on('message', (v) => {
  if (v === null) { parentPort.postMessage({ count, sum }); port.close(); return; }
  count++; sum += v.id;
});
`;

async function pingpong() {
  const ch = new MessageChannel();
  const echo = new Worker(ECHO, { eval: true, workerData: { port: ch.port2 }, transferList: [ch.port2] });
  const pinger = new Worker(PINGER, { eval: true, workerData: { port: ch.port1, warm: WARM, n: N },
                                      transferList: [ch.port1] });
  const [r] = await once(pinger, 'message');
  await Promise.all([once(pinger, 'exit'), once(echo, 'exit')]);
  const s = summarize(r.lat);
  check(s.n === N, 'count');
  return { round_trips: N, mean_us: (r.total_ms * 1000) / N, latency_us: s };
}

async function oneway() {
  const ch = new MessageChannel();
  const go = new MessageChannel();
  const cons = new Worker(CONSUMER, { eval: true, workerData: { port: ch.port2 }, transferList: [ch.port2] });
  const prod = new Worker(PRODUCER, { eval: true, workerData: { port: ch.port1, go: go.port2, m: M },
                                      transferList: [ch.port1, go.port2] });
  await Promise.all([once(cons, 'online'), once(prod, 'online')]);
  const reply = once(cons, 'message');
  const t0 = now();
  go.port1.postMessage('go');
  const [r] = await reply;
  const t1 = now();
  check(r.count === M, `count ${r.count}`);
  check(r.sum === (M * (M - 1)) / 2, `sum ${r.sum}`);
  go.port1.close();
  await Promise.all([prod.terminate(), cons.terminate()]);
  return { messages: M, total_ms: t1 - t0, msgs_per_s: M / ((t1 - t0) / 1000) };
}

(async () => {
  const out = {};
  out.port_pingpong = await pingpong();
  out.port_oneway = await oneway();
  emit('channels', out);
})().catch((e) => { console.error(e); process.exit(1); });
