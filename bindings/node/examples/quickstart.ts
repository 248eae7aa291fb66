// The quick start of the README, type-checked by `npm run typecheck`.
import { EventBus, NetError } from 'net-bus'

async function main(): Promise<void> {
  const bus = await EventBus.create({ shards: 4, backpressure: 'block', adapter: { type: 'memory' } })
  bus.ingest({ type: 'click', x: 1 })
  bus.ingestRaw(Buffer.from('{"type":"view"}'))
  const accepted: number = bus.ingestRawBatch(['{"a":1}', Buffer.from('{"a":2}')])
  await bus.flush()
  const page = await bus.poll({ limit: 100, filter: { type: 'click' } })
  for (const event of page.events) {
    const ts: bigint = event.insertionTs
    console.log(event.id, event.shardId, ts, event.json())
  }
  for await (const event of bus.stream({ follow: false })) {
    console.log(event.raw.toString())
  }
  try {
    await bus.poll({ cursor: 'not a cursor' })
  } catch (e) {
    if (e instanceof NetError) console.log(e.code)
  }
  console.log(accepted, bus.stats().eventsIngested)
  await bus.shutdown()
}

main()
