#!/usr/bin/env node
// Benchmark D's client: POSTs each delivery of a file made by
// "gen.js batch" exactly once, one after the other over one keep-alive
// connection, and reports the time per delivery and per update.
//
//   node batch-client.js URL FILE UPDATES_PER_DELIVERY [LABEL] [MAX_SECONDS]
//
// Prints one line:
//   RESULT label=.. deliveries=.. updates=.. total_s=.. ms_per_delivery=..
//          p50_ms=.. p99_ms=.. us_per_update=.. non2xx=..
'use strict';

const fs = require('fs');
const http = require('http');

const [url, file, perArg, label = 'D', maxArg = '60'] = process.argv.slice(2);
const per = parseInt(perArg, 10);
const deadline = process.hrtime.bigint() + BigInt(parseFloat(maxArg) * 1e9);
const u = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

const deliveries = fs.readFileSync(file, 'latin1').split('\n').filter((l) => l.length)
    .map((l) => {
        const sp = l.indexOf(' ');
        return { sig: l.slice(0, sp), body: Buffer.from(l.slice(sp + 1), 'latin1') };
    });

function post(d) {
    return new Promise((resolve, reject) => {
        const req = http.request({
            host: u.hostname, port: u.port, path: u.pathname + u.search,
            method: 'POST', agent,
            headers: {
                'Content-Type': 'application/json',
                'Content-Length': d.body.length,
                'X-Hub-Signature-256': 'sha256=' + d.sig,
            },
        }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode));
        });
        req.on('error', reject);
        req.end(d.body);
    });
}

(async () => {
    const times = [];
    let non2xx = 0;
    const codes = {};
    const t0 = process.hrtime.bigint();
    for (const d of deliveries) {
        const s = process.hrtime.bigint();
        const code = await post(d);
        const e = process.hrtime.bigint();
        times.push(Number(e - s) / 1e6);
        codes[code] = (codes[code] || 0) + 1;
        if (code < 200 || code > 299) non2xx++;
        if (e > deadline) break;
    }
    const total = Number(process.hrtime.bigint() - t0) / 1e9;
    agent.destroy();
    times.sort((a, b) => a - b);
    const pct = (p) => times[Math.min(times.length - 1, Math.floor(p / 100 * times.length))];
    const n = times.length;
    process.stdout.write(
        `RESULT label=${label} deliveries=${n} updates=${n * per} ` +
        `total_s=${total.toFixed(3)} ms_per_delivery=${(total * 1e3 / n).toFixed(3)} ` +
        `p50_ms=${pct(50).toFixed(3)} p99_ms=${pct(99).toFixed(3)} ` +
        `us_per_update=${(total * 1e6 / (n * per)).toFixed(3)} non2xx=${non2xx} ` +
        `codes=${Object.entries(codes).map(([k, v]) => k + ':' + v).join(',')}\n`);
})().catch((e) => {
    process.stderr.write(`batch-client: ${e.message}\n`);
    process.exit(1);
});
