// Package persister is the persister: consumer group `persister` on the
// room event log. It batches records from every partition it holds and
// writes each batch in one idempotent PostgreSQL transaction
// (store.ApplyBatch) behind a circuit breaker, and marks the records'
// offsets only after that transaction committed, so every acked event is
// persisted exactly once (docs/architecture.md).
package writer
