"""Settings for every test process and the commands tests start."""
import os

# The command lines keep compiled programs in ~/.cache/adain_jax/xla; tests must not write
# there. tests/test_compile_cache.py turns it on, in a temporary folder, where it tests it.
os.environ["ADAIN_JAX_COMPILE_CACHE"] = "0"
