"""Rules shared by data_process/, train/ and eval/ (imports none of them)."""
