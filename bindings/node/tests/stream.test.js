'use strict'
// EventBus#stream: an async iterator with dedup and a saved cursor; the event loop stays free.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const netbus = require('..')
const { EventBus } = netbus

function tmpdir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'netbus-node-'))
}

async function take(stream) {
  const got = []
  for await (const event of stream) got.push(event.json().n)
  return got
}

test('the stream resumes from its cursor file without loss or repeats', async () => {
  const dir = tmpdir()
  const cursorFile = path.join(dir, 'orders.cursor')
  const bus = await EventBus.create({ shards: 4, adapter: { type: 'log', dir: path.join(dir, 'log') } })
  bus.ingestRawBatch(Array.from({ length: 250 }, (_, n) => JSON.stringify({ n })))
  await bus.flush()
  const first = await take(bus.stream({ cursorFile, pageSize: 40, maxEvents: 100 }))
  assert.equal(first.length, 100)
  assert.ok(fs.readFileSync(cursorFile, 'utf8').trim().length > 0)
  // More events arrive while no consumer runs.
  bus.ingestRawBatch(Array.from({ length: 50 }, (_, i) => JSON.stringify({ n: 250 + i })))
  await bus.flush()
  const second = await take(bus.stream({ cursorFile, pageSize: 40 }))
  assert.equal(second.length, 200)
  assert.deepEqual([...first, ...second].sort((a, b) => a - b), Array.from({ length: 300 }, (_, i) => i))
  // Nothing left: a third run from the saved cursor gets nothing; fromStart ignores it.
  assert.deepEqual(await take(bus.stream({ cursorFile })), [])
  assert.equal((await take(bus.stream({ cursorFile, fromStart: true }))).length, 300)
  await bus.shutdown()
})

test('the stream resumes across a restart of the bus, and after a break', async () => {
  const dir = tmpdir()
  const cursorFile = path.join(dir, 'c')
  const log = { type: 'log', dir: path.join(dir, 'log') }
  async function run(from, to, expect) {
    const bus = await EventBus.create({ shards: 2, adapter: log })
    bus.ingestRawBatch(Array.from({ length: to - from }, (_, i) => JSON.stringify({ n: from + i })))
    await bus.flush()
    const got = await take(bus.stream({ cursorFile, pageSize: 7 }))
    assert.equal(got.length, expect)
    await bus.shutdown()
    return got
  }
  const a = await run(0, 30, 30)
  const b = await run(30, 45, 15)
  assert.deepEqual([...a, ...b].sort((x, y) => x - y), Array.from({ length: 45 }, (_, i) => i))

  // `break` ends the iterator through `return()`, which saves what was handed out.
  const bus = await EventBus.create({ shards: 2, adapter: log })
  bus.ingestRawBatch(Array.from({ length: 10 }, (_, i) => JSON.stringify({ n: 45 + i })))
  await bus.flush()
  const partial = []
  for await (const event of bus.stream({ cursorFile, pageSize: 5 })) {
    partial.push(event.json().n)
    if (partial.length === 5) break
  }
  const rest = await take(bus.stream({ cursorFile, pageSize: 5 }))
  assert.deepEqual([...partial, ...rest].sort((x, y) => x - y), Array.from({ length: 10 }, (_, i) => 45 + i))
  await bus.shutdown()
})

test('a damaged cursor file rejects the first next() instead of starting over', async () => {
  const dir = tmpdir()
  const bus = await EventBus.create({ shards: 2 })
  const garbage = path.join(dir, 'garbage.cursor')
  fs.writeFileSync(garbage, 'not-a-real-cursor!\n')
  const stream = bus.stream({ cursorFile: garbage })
  await assert.rejects(stream.next(), (e) => e instanceof netbus.InvalidCursorError && e.code === 'ERR_INVALID_CURSOR')
  const unreadable = path.join(dir, 'a-directory.cursor')
  fs.mkdirSync(unreadable)
  await assert.rejects(bus.stream({ cursorFile: unreadable }).next(), (e) => e instanceof netbus.CursorStoreError && e.code === 'ERR_CURSOR_STORE')
  await bus.shutdown()
})

test('the stream filters', async () => {
  const bus = await EventBus.create({ shards: 3 })
  bus.ingestRawBatch(Array.from({ length: 40 }, (_, n) => JSON.stringify({ n, even: n % 2 === 0 })))
  await bus.flush()
  const got = await take(bus.stream({ filter: { even: true }, pageSize: 6 }))
  assert.deepEqual(got.sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => 2 * i))
  await bus.shutdown()
})

test('a timer keeps firing while the stream waits on an empty follow', async () => {
  const bus = await EventBus.create({ shards: 2, maxDelayMs: 1 })
  const stream = bus.stream({ follow: true, minBackoffMs: 5, maxBackoffMs: 20 })
  let ticks = 0
  const timer = setInterval(() => ticks++, 10)
  const started = Date.now()
  // The stream is empty: this promise stays pending while the timer runs.
  const pending = stream.next()
  setTimeout(() => {
    bus.ingest({ n: 1 })
  }, 300)
  const { value, done } = await pending
  clearInterval(timer)
  const waited = Date.now() - started
  assert.equal(done, false)
  assert.equal(value.json().n, 1)
  assert.ok(waited >= 250, `waited ${waited} ms`)
  // A blocked event loop would leave the interval at 0 or 1 ticks.
  assert.ok(ticks >= 10, `only ${ticks} ticks in ${waited} ms`)
  await stream.close()
  assert.deepEqual(await stream.next(), { value: undefined, done: true })
  await bus.shutdown()
})
