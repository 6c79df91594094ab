// Target C of bench/run.sh: the webhook endpoint as people typically
// write it by hand in Express, done correctly: HMAC-SHA256 over the raw
// body, constant-time comparison, JSON.parse, every update of the batch
// walked, duplicates dropped with an in-memory Set of message ids, 200.
//
//   node server.js PORT SECRET_FILE VERIFY_TOKEN
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const express = require('express');

const port = parseInt(process.argv[2] || '18183', 10);
const secret = fs.readFileSync(process.argv[3]).toString().replace(/\r?\n$/, '');
const verifyToken = process.argv[4] || 't';

const app = express();
app.disable('x-powered-by');
app.disable('etag');

const seen = new Set();
const windows = new Map();     // wa_id -> last inbound timestamp
let accepted = 0;
let duplicates = 0;

app.get('/webhook', (req, res) => {
    if (req.query['hub.mode'] === 'subscribe' &&
        req.query['hub.verify_token'] === verifyToken &&
        /^[A-Za-z0-9_.-]{1,64}$/.test(req.query['hub.challenge'] || '')) {
        return res.type('text/plain').send(req.query['hub.challenge']);
    }
    res.sendStatus(403);
});

app.post('/webhook', express.raw({ type: 'application/json', limit: '4mb' }), (req, res) => {
    const header = req.get('x-hub-signature-256') || '';
    if (!header.startsWith('sha256=')) return res.sendStatus(401);
    const got = Buffer.from(header.slice(7), 'hex');
    const want = crypto.createHmac('sha256', secret).update(req.body).digest();
    if (got.length !== want.length || !crypto.timingSafeEqual(got, want)) {
        return res.sendStatus(403);
    }

    let doc;
    try {
        doc = JSON.parse(req.body.toString('utf8'));
    } catch (e) {
        return res.sendStatus(200);     // never make Meta retry garbage
    }

    for (const entry of doc.entry || []) {
        for (const change of entry.changes || []) {
            const value = change.value || {};
            for (const m of value.messages || []) {
                if (seen.has(m.id)) { duplicates++; continue; }
                seen.add(m.id);
                accepted++;
                const ts = parseInt(m.timestamp, 10);
                if (!(windows.get(m.from) >= ts)) windows.set(m.from, ts);
            }
            for (const s of value.statuses || []) {
                const key = s.id + ':' + s.status;
                if (seen.has(key)) { duplicates++; continue; }
                seen.add(key);
                accepted++;
            }
        }
    }
    res.sendStatus(200);
});

const server = app.listen(port, '127.0.0.1', () => {
    process.stdout.write(`express ${require('express/package.json').version} ` +
                         `listening on 127.0.0.1:${port}\n`);
});
server.keepAliveTimeout = 65000;

function bye() {
    process.stdout.write(`express: accepted=${accepted} duplicates=${duplicates}\n`);
    process.exit(0);
}
process.on('SIGTERM', bye);
process.on('SIGINT', bye);
