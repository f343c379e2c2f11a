// The event-stream parser of the SSE transport, and the URL helpers, without
// a server.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SseParser, httpUrl, sseSeq } from '../switchboard.js';

/** Feeds `chunks` one by one; returns every event. */
function parse(...chunks) {
  const parser = new SseParser();
  const events = [];
  for (const chunk of chunks) events.push(...parser.feed(chunk));
  return { events, parser };
}

/** Every way to split `text` in two, fed as two chunks, gives `expected`. */
function assertAllSplits(text, expected) {
  for (let at = 0; at <= text.length; at++) {
    const { events } = parse(text.slice(0, at), text.slice(at));
    assert.deepEqual(events, expected, `split at ${at}: ${JSON.stringify([text.slice(0, at), text.slice(at)])}`);
  }
  // And one character at a time.
  assert.deepEqual(parse(...text).events, expected, 'one character per chunk');
}

test('one event per blank line; id and data', () => {
  const { events, parser } = parse('id: s1.1\ndata: {"type":"connected"}\n\ndata: {"type":"ping"}\n\n');
  assert.deepEqual(events, [
    { data: '{"type":"connected"}', event: 'message', id: 's1.1' },
    { data: '{"type":"ping"}', event: 'message' },
  ]);
  assert.equal(parser.lastEventId, 's1.1');
});

test('several data lines join with a newline; the space after the colon is optional and only one is dropped', () => {
  const { events } = parse('data:a\ndata:  b\ndata\ndata: c\n\n');
  assert.deepEqual(events, [{ data: 'a\n b\n\nc', event: 'message' }]);
});

test('comments (the padding, keep-alives) are skipped; an event without data is not dispatched', () => {
  const padding = `: ${' '.repeat(2048)}\n\n`;
  const { events, parser } = parse(padding, 'retry: 2000\n\n', ':\n\n', 'id: s.4\n\n', 'event: x\n\n', 'data: 1\n\n');
  assert.deepEqual(events, [{ data: '1', event: 'message' }]);
  assert.equal(parser.retry, 2000);
  // An id without data still sets the last event id.
  assert.equal(parser.lastEventId, 's.4');
});

test('CRLF, LF and CR line ends, split anywhere across chunks', () => {
  const expected = [
    { data: '{"a":1}', event: 'message', id: 'S.2' },
    { data: 'x\ny', event: 'message' },
    { data: 'z', event: 'message', id: 'S.3' },
  ];
  assertAllSplits('id: S.2\r\ndata: {"a":1}\r\n\r\ndata: x\r\ndata: y\r\n\r\n: c\r\nid: S.3\r\ndata: z\r\n\r\n', expected);
  assertAllSplits('id: S.2\ndata: {"a":1}\n\ndata: x\ndata: y\n\n: c\nid: S.3\ndata: z\n\n', expected);
  assertAllSplits('id: S.2\rdata: {"a":1}\r\rdata: x\rdata: y\r\r: c\rid: S.3\rdata: z\r\r', expected);
  // Mixed.
  assertAllSplits('id: S.2\r\ndata: {"a":1}\n\rdata: x\rdata: y\n\n: c\r\nid: S.3\ndata: z\r\r', expected);
});

test('an incomplete event waits for its blank line; a CR ending a chunk ends the line at once', () => {
  const parser = new SseParser();
  assert.deepEqual(parser.feed('data: {"n":1}\n'), []);
  // The CR is the blank line: the event is complete without waiting.
  assert.deepEqual(parser.feed('\r'), [{ data: '{"n":1}', event: 'message' }]);
  // The LF that follows belongs to that CRLF: not another (blank) line.
  assert.deepEqual(parser.feed('\ndata: 2\r'), []);
  assert.deepEqual(parser.feed('\n'), []);
  assert.deepEqual(parser.feed('\n'), [{ data: '2', event: 'message' }]);
  assert.deepEqual(parser.feed('data: 3'), []);
  assert.deepEqual(parser.feed('\n\n'), [{ data: '3', event: 'message' }]);
});

test('a byte order mark at the start is dropped; event names and unknown fields', () => {
  const { events } = parse('\uFEFF', 'data: 1\n\n', 'event: custom\nfoo: bar\ndata: 2\n\n');
  assert.deepEqual(events, [
    { data: '1', event: 'message' },
    { data: '2', event: 'custom' },
  ]);
  // A BOM later is data.
  assert.deepEqual(parse('data: \uFEFF\n\n').events, [{ data: '\uFEFF', event: 'message' }]);
});

test('an id is per event; an id with NUL is ignored', () => {
  const { events, parser } = parse('id: a.1\ndata: 1\n\ndata: 2\n\nid: b\0.9\ndata: 3\n\n');
  assert.deepEqual(events, [
    { data: '1', event: 'message', id: 'a.1' },
    { data: '2', event: 'message' },
    { data: '3', event: 'message' },
  ]);
  assert.equal(parser.lastEventId, 'a.1');
});

test('sseSeq reads the seq of <session>.<seq>', () => {
  assert.equal(sseSeq('2Qzcr9wc.17'), 17);
  assert.equal(sseSeq('a.b.c.3'), 3);
  assert.equal(sseSeq('nodot'), null);
  assert.equal(sseSeq('s.'), null);
  assert.equal(sseSeq('s.1x'), null);
  assert.equal(sseSeq(undefined), null);
});

test('httpUrl derives the HTTP endpoints from any base URL', () => {
  assert.equal(httpUrl('http://host:8000', '/connection/sse'), 'http://host:8000/connection/sse');
  assert.equal(httpUrl('https://host/rt/', '/connection/poll'), 'https://host/rt/connection/poll');
  assert.equal(httpUrl('wss://host/rt/connection/websocket', '/connection/send'), 'https://host/rt/connection/send');
  assert.equal(httpUrl('ws://host', '/connection/sse'), 'http://host/connection/sse');
  assert.throws(() => httpUrl('ftp://host', '/x'), TypeError);
});
