// TableStore: one table's rows on one server -- storage, update rule and initial values.
//
// Created from the table's TableSpec when the server meets the table (KVServerCore). A push
// applies the table's Updater to each pushed row (creating the row from the table's
// InitializerSpec, with zeroed rule state, the first time a key is seen); a pull answers the
// rows of the requested keys in request order, a never-pushed key reading as its initial value
// (without being stored). The rule's per-value state lives beside the value in the same
// storage slot, so that later replication, migration and checkpoints carry it.
//
// Storage is chosen by TableSpec::storage: a sparse open-addressing hash table (only touched
// keys stored; keys and rows in parallel arrays so that a float SGD parameter costs about
// 12 bytes / load factor) or a dense array over the declared key range.
//
// Large requests are applied on several threads (the ApplyPool given at creation): the keys are
// split into shards by a hash of the key, each shard owned by one pool thread, so the hot path
// takes no lock. Small requests run inline on the calling thread.
//
// Thread-compatible: one request at a time (the server's receive thread).
#pragma once
