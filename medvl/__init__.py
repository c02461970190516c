"""Rules shared by data_process/, train/ and eval/ (imports none of them)."""
from medvl.quiet import quiet_third_party

quiet_third_party()
