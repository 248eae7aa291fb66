// Types of the public surface of `net-bus` (index.js). The option and record types come from
// native.d.ts, which `npm run build` generates from the Rust sources.
import type { BusOptions, PollOptions, StreamOptions, Stats, EventRecord } from './native'

export type { BusOptions, PollOptions, StreamOptions, Stats, AdapterOptions, RejectedStats, AdapterErrorStats } from './native'

/** A filter: JSON text, or a value serialized with JSON.stringify. */
export type FilterInput = string | object

/** Base of every error thrown or rejected by net-bus; `code` is stable. */
export declare class NetError extends Error {
  constructor(message: string, code: string)
  readonly code: string
  /** For AdapterError: the adapter's error kind (`connection`, `transient`, ...). */
  kind?: string
}
export declare class ConfigError extends NetError {}
export declare class InvalidArgumentError extends NetError {}
export declare class IngestionError extends NetError {}
export declare class BackpressureError extends IngestionError {}
export declare class SampledError extends IngestionError {}
export declare class UnroutedError extends IngestionError {}
export declare class ShuttingDownError extends IngestionError {}
export declare class SerializationError extends IngestionError {}
export declare class TooLargeError extends IngestionError {}
export declare class ConsumerError extends NetError {}
export declare class InvalidCursorError extends ConsumerError {}
export declare class InvalidFilterError extends ConsumerError {}
export declare class UnknownShardError extends ConsumerError {}
export declare class AdapterError extends NetError {}
export declare class CursorStoreError extends NetError {}
export declare class StreamError extends NetError {}

/** An event read back from the bus. */
export declare class Event {
  constructor(record: EventRecord)
  readonly id: string
  readonly raw: Buffer
  /** Nanoseconds since the Unix epoch. */
  readonly insertionTs: bigint
  readonly shardId: number
  readonly dedupId: string | null
  json(): unknown
}

export interface Page {
  events: Event[]
  cursor: string
  hasMore: boolean
}

export interface Refusal {
  index: number
  error: IngestionError
}

export interface PollRequest extends Omit<PollOptions, 'filter'> {
  filter?: FilterInput | null
}

export interface StreamRequest extends Omit<StreamOptions, 'filter'> {
  filter?: FilterInput | null
}

export declare class EventStream implements AsyncIterableIterator<Event> {
  [Symbol.asyncIterator](): EventStream
  next(): Promise<IteratorResult<Event, undefined>>
  return(): Promise<IteratorResult<Event, undefined>>
  commit(): Promise<boolean>
  close(): Promise<void>
}

export declare class EventBus {
  private constructor()
  static create(options?: BusOptions): Promise<EventBus>
  ingest(event: unknown): void
  ingestRaw(event: Buffer | Uint8Array | string): void
  ingestRawBatch(events: Array<Buffer | string>): number
  /** The refusals of the last `ingestRawBatch` call. */
  lastBatchRefusals?: Refusal[]
  flush(): Promise<void>
  poll(options?: PollRequest): Promise<Page>
  stream(options?: StreamRequest): EventStream
  stats(): Stats
  shutdown(): Promise<void>
  readonly shards: number
  readonly adapterName: string
}

export declare const MAX_POLL_LIMIT: number
/** Does nothing in Rust: the cost of crossing into the addon, for benchmarks. */
export declare function noop(): void
