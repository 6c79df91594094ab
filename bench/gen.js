#!/usr/bin/env node
// Generates signed, Meta-shaped webhook deliveries for the benchmarks.
//
//   node bench/gen.js single SECRET_FILE OUT COUNT [TAG]
//       COUNT deliveries, each one text message with a distinct wamid
//   node bench/gen.js batch SECRET_FILE OUT COUNT UPDATES [TAG]
//       COUNT deliveries of UPDATES updates each (80% text messages, 20%
//       delivery statuses), every id distinct across the whole file
//
// OUT gets one delivery per line: "<64 hex HMAC-SHA256> <raw JSON body>\n".
// The body is serialized the way Meta sends it: compact, with non-ASCII
// and '/' escaped as \uXXXX / \/, so the HMAC holds over exactly these
// bytes.  TAG (default: random) makes the ids unique per run; the Lua
// script bench/wrk/replay.lua turns each line into a full HTTP request.
'use strict';

const crypto = require('crypto');
const fs = require('fs');

function usage() {
    process.stderr.write('usage: gen.js single SECRET OUT COUNT [TAG]\n' +
                         '       gen.js batch SECRET OUT COUNT UPDATES [TAG]\n');
    process.exit(2);
}

const argv = process.argv.slice(2);
if (argv.length < 4) usage();
const kind = argv[0];
const secret = fs.readFileSync(argv[1]).toString().replace(/\r?\n$/, '');
const out = argv[2];
const count = parseInt(argv[3], 10);
let updates = 1;
let tag;
if (kind === 'single') {
    tag = argv[4];
} else if (kind === 'batch') {
    updates = parseInt(argv[4], 10);
    tag = argv[5];
} else {
    usage();
}
if (!(count > 0) || !(updates > 0)) usage();
tag = tag || crypto.randomBytes(4).toString('hex');

// Meta escapes non-ASCII and some ASCII characters in its bodies.
function metaJson(v) {
    return JSON.stringify(v).replace(/[\u007f-\uffff\/<%@]/g, (c) => {
        if (c === '/') return '\\/';
        return '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0');
    });
}

const WABA_ID = '102290129340398';
const PHONE_NUMBER_ID = '106540352242922';
const DISPLAY = '15550783881';
const CONTACTS = 5000;          // distinct customers writing in
const NAMES = ['Sheena Nelson', 'João Gonçalves', 'Ana María', 'Ravi Kumar',
               'Zoë Müller', 'Kenji Sato', 'Fatima Zahra', 'Li Wei'];
const TEXTS = [
    'Does it come in another color?',
    'Hi! Is my order #4821 shipped yet? https://example.com/o/4821',
    'Olá, vocês entregam no sábado? 😊',
    'I need to change my delivery address to 12 Baker St / flat 3',
    'Thanks, that worked 👍',
    'Can I pay 50% now and the rest on delivery?',
    'ok',
    'Where can I find the invoice for last month? My email is ravi@example.com',
];

const now = Math.floor(Date.now() / 1000);
let seq = 0;

// BENCH_TIMESTAMPS=rising: each message newer than the one before (every
// contact's window moves: one contact write per message, as in
// production); otherwise they cycle over the last hour.  A file that
// follows another one in the same run (bench/run.sh's sweep) starts its
// rising timestamps where that one ended: BENCH_GEN_FIRST, the messages
// before it.  One second per 50 messages, from four hours ago: 720,000
// messages stay in the past.
const RISING = process.env.BENCH_TIMESTAMPS === 'rising';
const FIRST = Number(process.env.BENCH_GEN_FIRST || 0);

function timestamp(n) {
    return String(RISING ? now - 14400 + Math.floor((FIRST + n) / 50)
                         : now - 3600 + (n % 3600));
}

function wamid(waId) {
    // Meta's ids are base64 of an opaque binary; only uniqueness matters.
    const raw = Buffer.concat([
        Buffer.from(waId), Buffer.from([0x15, 0x02, 0x00, 0x12, 0x18, 0x14]),
        Buffer.from(tag + (seq++).toString(16).toUpperCase().padStart(12, '0')),
    ]);
    return 'wamid.HBgL' + raw.toString('base64');
}

function contact(n) {
    return '1650555' + String(n % CONTACTS).padStart(4, '0');
}

function messageValue(n) {
    const waId = contact(n);
    return {
        messaging_product: 'whatsapp',
        metadata: { display_phone_number: DISPLAY, phone_number_id: PHONE_NUMBER_ID },
        contacts: [{ profile: { name: NAMES[n % NAMES.length] }, wa_id: waId }],
        messages: [{
            from: waId,
            id: wamid(waId),
            timestamp: timestamp(n),
            text: { body: TEXTS[n % TEXTS.length] },
            type: 'text',
        }],
    };
}

function statusValue(n) {
    const waId = contact(n);
    const st = n % 2 ? 'read' : 'delivered';
    return {
        messaging_product: 'whatsapp',
        metadata: { display_phone_number: DISPLAY, phone_number_id: PHONE_NUMBER_ID },
        statuses: [{
            id: wamid(waId),
            status: st,
            timestamp: timestamp(n),
            recipient_id: waId,
            conversation: {
                id: crypto.createHash('md5').update(tag + n).digest('hex'),
                origin: { type: 'service' },
            },
            pricing: { billable: true, pricing_model: 'CBP', category: 'service' },
        }],
    };
}

function delivery(first, n) {
    // Meta groups changes per WhatsApp Business Account entry; big batches
    // arrive as several entries of many changes, one update per change.
    const perEntry = 100;
    const entry = [];
    for (let i = 0; i < n; i += perEntry) {
        const changes = [];
        for (let j = i; j < Math.min(n, i + perEntry); j++) {
            const k = first + j;
            const value = (n > 1 && j % 5 === 4) ? statusValue(k) : messageValue(k);
            changes.push({ value, field: 'messages' });
        }
        entry.push({ id: WABA_ID, changes });
    }
    return metaJson({ object: 'whatsapp_business_account', entry });
}

const fd = fs.openSync(out, 'w', 0o600);
let chunk = [];
let chunkLen = 0;
function flush() {
    if (chunk.length) fs.writeSync(fd, chunk.join(''));
    chunk = [];
    chunkLen = 0;
}

for (let i = 0; i < count; i++) {
    const body = delivery(i * updates, updates);
    const sig = crypto.createHmac('sha256', secret).update(body).digest('hex');
    const line = sig + ' ' + body + '\n';
    chunk.push(line);
    chunkLen += line.length;
    if (chunkLen > (4 << 20)) flush();
}
flush();
fs.closeSync(fd);
