'use strict'
// The bus from Node: round trips, cursors, filters, error codes, stats, shutdown.
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

async function drain(bus, { limit = 100, filter } = {}) {
  const events = []
  let cursor
  for (;;) {
    const page = await bus.poll({ limit, cursor, filter })
    events.push(...page.events)
    cursor = page.cursor
    if (!page.hasMore && page.events.length === 0) return events
  }
}

async function roundTrip(bus) {
  for (let n = 0; n < 100; n++) bus.ingest({ n })
  for (let n = 100; n < 200; n++) bus.ingestRaw(Buffer.from(JSON.stringify({ n })))
  for (let n = 200; n < 250; n++) bus.ingestRaw(JSON.stringify({ n }))
  assert.equal(bus.ingestRawBatch(Array.from({ length: 50 }, (_, i) => Buffer.from(`{"n":${250 + i}}`))), 50)
  assert.deepEqual(bus.lastBatchRefusals, [])
  await bus.flush()
  const events = await drain(bus)
  assert.deepEqual(events.map((e) => e.json().n).sort((a, b) => a - b), Array.from({ length: 300 }, (_, i) => i))
  const e = events[0]
  assert.ok(Buffer.isBuffer(e.raw))
  assert.equal(typeof e.id, 'string')
  assert.equal(typeof e.insertionTs, 'bigint')
  assert.ok(e.insertionTs > 1_600_000_000_000_000_000n)
  assert.ok(Number.isInteger(e.shardId) && e.shardId >= 0 && e.shardId < bus.shards)
  assert.ok(e.dedupId === null || typeof e.dedupId === 'string')
  const stats = bus.stats()
  assert.equal(stats.eventsIngested, 300)
  assert.equal(stats.eventsDispatched, 300)
}

test('memory round trip: every ingest form, every event field', async () => {
  const bus = await EventBus.create({ shards: 4, ringCapacity: 4096, backpressure: 'block', maxEvents: 1024, maxDelayMs: 5, adapter: { type: 'memory' } })
  assert.equal(bus.adapterName, 'memory')
  await roundTrip(bus)
  await bus.shutdown()
})

test('log round trip, and a new bus on the same directory reads the same events', async () => {
  const dir = path.join(tmpdir(), 'log')
  const bus = await EventBus.create({ shards: 4, adapter: { type: 'log', dir } })
  assert.equal(bus.adapterName, 'log')
  await roundTrip(bus)
  await bus.shutdown()
  const again = await EventBus.create({ shards: 4, adapter: { type: 'log', dir } })
  const events = await drain(again)
  assert.equal(events.length, 300)
  assert.equal(new Set(events.map((e) => e.json().n)).size, 300)
  await again.shutdown()
})

test('a cursor resumes exactly once over limited, filtered pages', async () => {
  const bus = await EventBus.create({ shards: 8 })
  const seen = []
  let cursor
  let n = 0
  for (let round = 0; round < 5; round++) {
    bus.ingestRawBatch(Array.from({ length: 200 }, (_, i) => JSON.stringify({ n: n + i, even: (n + i) % 2 === 0 })))
    n += 200
    await bus.flush()
    for (;;) {
      const page = await bus.poll({ limit: 17, cursor, filter: { even: true } })
      assert.ok(page.events.length <= 17)
      seen.push(...page.events.map((e) => e.json().n))
      cursor = page.cursor
      if (!page.hasMore) break
    }
  }
  assert.ok(seen.every((x) => x % 2 === 0))
  assert.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: n / 2 }, (_, i) => 2 * i))
  await bus.shutdown()
})

test('filters given as text and as objects select the same events', async () => {
  const bus = await EventBus.create({ shards: 3 })
  for (let n = 0; n < 40; n++) bus.ingest({ n, kind: n % 4 === 0 ? 'a' : 'b' })
  await bus.flush()
  const asObject = await drain(bus, { filter: { kind: 'a' } })
  const asText = await drain(bus, { filter: '{"kind":"a"}' })
  assert.deepEqual(asObject.map((e) => e.json().n).sort((a, b) => a - b), [0, 4, 8, 12, 16, 20, 24, 28, 32, 36])
  assert.equal(asText.length, 10)
  await bus.shutdown()
})

test('timestamp ordering is ordered; an unknown ordering is refused', async () => {
  const bus = await EventBus.create({ shards: 4 })
  bus.ingestRawBatch(Array.from({ length: 100 }, (_, i) => `{"i":${i}}`))
  await bus.flush()
  let seen = 0
  let cursor
  for (;;) {
    const page = await bus.poll({ limit: 40, cursor, ordering: 'timestamp' })
    const stamps = page.events.map((e) => e.insertionTs)
    assert.deepEqual(stamps, [...stamps].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)))
    seen += stamps.length
    cursor = page.cursor
    if (page.events.length === 0 && !page.hasMore) break
  }
  assert.equal(seen, 100)
  await assert.rejects(bus.poll({ ordering: 'random' }), { name: 'InvalidArgumentError', code: 'ERR_INVALID_ARG_VALUE' })
  await bus.shutdown()
})

test('backpressure throws ERR_BACKPRESSURE; batches report refusals; the stats invariant holds after shutdown', async () => {
  // A mesh without peers cannot deliver: the one batch in flight waits, the ring fills.
  const bus = await EventBus.create({ shards: 1, ringCapacity: 4, maxEvents: 2, adapter: { type: 'mesh' }, shutdownTimeoutMs: 200 })
  let accepted = 0
  let raised
  for (let i = 0; i < 100; i++) {
    try {
      bus.ingestRaw(Buffer.from('{}'))
      accepted++
    } catch (e) {
      raised = e
      break
    }
  }
  assert.ok(raised instanceof netbus.BackpressureError)
  assert.ok(raised instanceof netbus.IngestionError)
  assert.ok(raised instanceof netbus.NetError)
  assert.ok(raised instanceof Error)
  assert.equal(raised.code, 'ERR_BACKPRESSURE')
  assert.ok(accepted > 0 && accepted < 100)
  const n = bus.ingestRawBatch(Array.from({ length: 10 }, () => '{}'))
  const refusals = bus.lastBatchRefusals
  const positions = refusals.map((r) => r.index)
  assert.ok(positions.length >= 5)
  assert.deepEqual(positions, [...new Set(positions)].sort((a, b) => a - b))
  assert.equal(n + positions.length, 10)
  assert.ok(refusals.every((r) => r.error instanceof netbus.BackpressureError && r.error.code === 'ERR_BACKPRESSURE'))
  assert.equal(bus.stats().rejected.backpressure, 1 + positions.length)
  await bus.shutdown()
  const stats = bus.stats()
  assert.equal(stats.shutdownWasLossy, true)
  assert.equal(stats.eventsDropped, accepted + n)
  assert.equal(stats.eventsDispatched + stats.eventsDropped, stats.eventsIngested)
})

test('every error code: config, argument, too large, serialization, shutting down', async () => {
  await assert.rejects(EventBus.create({ backpressure: 'sometimes' }), { name: 'InvalidArgumentError', code: 'ERR_INVALID_ARG_VALUE' })
  await assert.rejects(EventBus.create({ adapter: { type: 'carrier-pigeon' } }), { code: 'ERR_INVALID_ARG_VALUE' })
  await assert.rejects(EventBus.create({ adapter: { type: 'log' } }), { code: 'ERR_INVALID_ARG_VALUE' })
  await assert.rejects(EventBus.create({ shards: 0 }), (e) => e instanceof netbus.ConfigError && e.code === 'ERR_CONFIG')
  const psk = path.join(tmpdir(), 'bad.psk')
  fs.writeFileSync(psk, 'not hex')
  await assert.rejects(EventBus.create({ adapter: { type: 'mesh', pskFile: psk } }), { name: 'ConfigError', code: 'ERR_CONFIG' })

  const bus = await EventBus.create({ shards: 2, maxEventBytes: 64 })
  assert.throws(() => bus.ingestRaw(Buffer.alloc(65, 97)), (e) => e instanceof netbus.TooLargeError && e.code === 'ERR_TOO_LARGE')
  const circular = {}
  circular.self = circular
  assert.throws(() => bus.ingest(circular), (e) => e instanceof netbus.SerializationError && e.code === 'ERR_SERIALIZATION')
  assert.throws(() => bus.ingest(undefined), { code: 'ERR_SERIALIZATION' })
  assert.throws(() => bus.ingest({ big: 1n }), { code: 'ERR_SERIALIZATION' })
  assert.throws(() => bus.ingestRaw(42), (e) => e instanceof TypeError && e.code === 'ERR_INVALID_ARG_TYPE')
  assert.throws(() => bus.ingestRawBatch([Buffer.from('{}'), 42]), (e) => e instanceof TypeError && e.code === 'ERR_INVALID_ARG_TYPE')
  bus.ingestRaw(new Uint8Array([123, 125]))
  await assert.rejects(bus.poll({ cursor: 'garbage!' }), (e) => e instanceof netbus.InvalidCursorError && e instanceof netbus.ConsumerError && e.code === 'ERR_INVALID_CURSOR')
  await assert.rejects(bus.poll({ filter: '{not json' }), (e) => e instanceof netbus.InvalidFilterError && e.code === 'ERR_INVALID_FILTER')
  await bus.shutdown()
  assert.equal(bus.stats().rejected.tooLarge, 1)
})

test('shutdown works while other references exist; later calls throw ERR_SHUTTING_DOWN', async () => {
  const bus = await EventBus.create({ shards: 2 })
  const other = bus
  const holder = { bus }
  const stream = bus.stream({ follow: false })
  for (let n = 0; n < 10; n++) bus.ingest({ n })
  await bus.shutdown()
  await other.shutdown() // harmless a second time
  const isShuttingDown = (e) => e instanceof netbus.ShuttingDownError && e.code === 'ERR_SHUTTING_DOWN'
  assert.throws(() => holder.bus.ingest({ late: true }), isShuttingDown)
  assert.throws(() => other.ingestRaw('{}'), isShuttingDown)
  assert.equal(other.ingestRawBatch(['{}', '{}']), 0)
  assert.ok(other.lastBatchRefusals.every((r) => isShuttingDown(r.error)))
  await assert.rejects(other.flush(), isShuttingDown)
  await assert.rejects(other.poll(), isShuttingDown)
  assert.throws(() => other.stream(), isShuttingDown)
  await stream.close()
  const stats = bus.stats()
  assert.equal(stats.eventsIngested, 10)
  assert.equal(stats.eventsDispatched + stats.eventsDropped, stats.eventsIngested)
  assert.equal(stats.rejected.shuttingDown, 4)
})

const HOSTILE_CURSORS = ['garbage!', 'AAAA', 'A'.repeat(10_000), '\x00\xff', 'AQQAAAExAQABMQIAATIDAAExaQTSak', '//////////////////////////8', '🙂']
const HOSTILE_FILTERS = ['{not json', '[]', '42', '{"$or": 5}', '{"a": {"$gt": []}}', 'null', '['.repeat(5000) + ']'.repeat(5000), '{"a": '.repeat(5000) + '1' + '}'.repeat(5000), '{"' + 'a'.repeat(100_000) + '": 1']

test('hostile cursors and filters reject, never crash the process', async () => {
  const bus = await EventBus.create({ shards: 4 })
  bus.ingest({ a: 1 })
  await bus.flush()
  for (const cursor of HOSTILE_CURSORS) {
    await assert.rejects(bus.poll({ cursor }), (e) => e instanceof netbus.ConsumerError, `cursor ${cursor.slice(0, 20)}`)
  }
  for (const filter of HOSTILE_FILTERS) {
    await assert.rejects(bus.poll({ filter }), (e) => e instanceof netbus.InvalidFilterError, `filter ${filter.slice(0, 20)}`)
    assert.throws(() => bus.stream({ filter }), (e) => e.code === 'ERR_INVALID_FILTER')
  }
  const deep = {}
  let at = deep
  for (let i = 0; i < 5000; i++) at = at.a = {}
  await assert.rejects(bus.poll({ filter: deep }), { code: 'ERR_INVALID_FILTER' })
  assert.equal((await bus.poll()).events.length, 1)
  await bus.shutdown()
})

test('the constructor cannot be called directly; MAX_POLL_LIMIT and noop are exported', () => {
  assert.throws(() => new EventBus({}), TypeError)
  assert.equal(typeof netbus.MAX_POLL_LIMIT, 'number')
  assert.ok(netbus.MAX_POLL_LIMIT > 0)
  assert.equal(netbus.noop(), undefined)
})
