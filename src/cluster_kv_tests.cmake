# Unit and in-process tests of src/cluster and src/kv.
