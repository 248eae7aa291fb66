'use strict'
// Round trips through the Redis and JetStream adapters, against private servers.
const { test, after, before } = require('node:test')
const assert = require('node:assert/strict')
const { EventBus } = require('..')
const { redisServer, natsServer } = require('./servers.js')

async function roundTrip(adapter) {
  const bus = await EventBus.create({ shards: 3, adapter })
  bus.ingestRawBatch(Array.from({ length: 150 }, (_, n) => JSON.stringify({ n })))
  for (let n = 150; n < 200; n++) bus.ingest({ n })
  await bus.flush()
  const seen = []
  let cursor
  for (;;) {
    const page = await bus.poll({ limit: 33, cursor })
    seen.push(...page.events.map((e) => e.json().n))
    for (const e of page.events) {
      assert.ok(Buffer.isBuffer(e.raw))
      assert.equal(typeof e.id, 'string')
      assert.ok(e.shardId < 3)
    }
    cursor = page.cursor
    if (!page.hasMore && page.events.length === 0) break
  }
  assert.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: 200 }, (_, i) => i))
  // A second consumer from the last cursor sees nothing new; a stream from the start sees all.
  assert.equal((await bus.poll({ cursor })).events.length, 0)
  let streamed = 0
  for await (const _ of bus.stream({ pageSize: 50 })) streamed++
  assert.equal(streamed, 200)
  await bus.shutdown()
  const stats = bus.stats()
  assert.equal(stats.eventsDispatched, 200)
  assert.equal(stats.eventsDispatched + stats.eventsDropped, stats.eventsIngested)
}

let redis
let nats
before(async () => {
  redis = await redisServer()
  nats = await natsServer()
})
after(async () => {
  if (redis && redis.stop) await redis.stop()
  if (nats && nats.stop) await nats.stop()
})

test('redis round trip', async (t) => {
  if (redis.skip) return t.skip(redis.skip)
  await roundTrip({ type: 'redis', url: redis.url, stream: `node-rt-${process.pid}` })
})

test('jetstream round trip', async (t) => {
  if (nats.skip) return t.skip(nats.skip)
  await roundTrip({ type: 'jetstream', url: nats.url, stream: `node_rt_${process.pid}` })
})

test('an unreachable server rejects polls with ERR_ADAPTER and its kind, and drops are counted', async () => {
  const bus = await EventBus.create({ shards: 1, shutdownTimeoutMs: 500, adapter: { type: 'redis', url: 'redis://127.0.0.1:1', stream: 'x' } })
  bus.ingest({ a: 1 })
  await assert.rejects(bus.poll(), (e) => e.name === 'AdapterError' && e.code === 'ERR_ADAPTER' && e.kind === 'connection')
  await bus.shutdown().catch(() => {})
  const stats = bus.stats()
  assert.equal(stats.eventsIngested, 1)
  assert.equal(stats.eventsDispatched + stats.eventsDropped, 1)
})
