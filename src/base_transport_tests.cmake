# Unit tests of src/base and src/transport (and the control-message codec).
