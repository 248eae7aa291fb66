// The README's quick start, run by tests/readme.test.js.
const { EventBus } = require('net-bus')

async function main() {
  const bus = await EventBus.create({ shards: 4, backpressure: 'block', adapter: { type: 'memory' } })
  bus.ingest({ type: 'click', x: 1 })
  bus.ingestRaw(Buffer.from('{"type":"view"}'))
  bus.ingestRawBatch(['{"type":"click","x":2}', Buffer.from('{"type":"view"}')])
  await bus.flush()
  const page = await bus.poll({ limit: 100, filter: { type: 'click' } })
  for (const event of page.events) console.log(event.shardId, event.json())
  await bus.shutdown()
  console.log('ingested', bus.stats().eventsIngested)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
