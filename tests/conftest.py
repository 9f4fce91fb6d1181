"""Settings for every test process and the commands tests start."""
import os

# The command lines keep compiled programs in ~/.cache/adain_jax/xla; tests must not write
# there. tests/test_compile_cache.py turns it on, in a temporary folder, where it tests it.
os.environ["ADAIN_JAX_COMPILE_CACHE"] = "0"

# Test programs are small and most are compiled for one or two calls: LLVM's optimisations
# cost more compile time than they save at run time (a test of jit, vmap and grad took 34%
# less). Numbers agree to float32 rounding; the commands tests start inherit it.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()
