"""Devices, meshes and batches for data-parallel training on one or many hosts.

One mesh axis, "data", spans every device of every process. Batches are sharded along it,
parameters and optimiser state are replicated, and jax.jit inserts the gradient all-reduce
that a mean loss over the global batch implies. Each process only ever holds its own
slice of the batch (jax.make_array_from_process_local_data).
"""
from __future__ import annotations

import logging

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"

log = logging.getLogger(__name__)


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """jax.distributed.initialize; unset values come from the cluster environment.

    JAX reads JAX_COORDINATOR_ADDRESS and detects SLURM, Open MPI and the Cloud TPU/GKE
    environments itself. Must run before anything touches a device.
    """
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over `devices` (default: all devices of all processes), axis "data".

    Auto axis type: the compiler propagates the batch sharding through the model (JAX 0.10's
    make_mesh defaults to Explicit, which would need a sharding rule for every reshape).
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (AXIS,), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def local_batch_size(global_batch_size: int) -> int:
    """This process's share of the global batch; raises ValueError if it does not divide.

    The global batch splits evenly over jax.device_count() devices, hence over processes
    (each holds the same number of devices) and over each process's local devices.
    """
    devices = jax.device_count()
    if global_batch_size < 1 or global_batch_size % devices:
        raise ValueError(f"batch size {global_batch_size} does not divide evenly over "
                         f"{devices} devices; use a multiple of {devices}")
    local = global_batch_size // jax.process_count()
    if local % jax.local_device_count():  # processes with unequal device counts
        raise ValueError(f"this process's {local} examples do not divide evenly over its "
                         f"{jax.local_device_count()} devices")
    return local


def shard_batch(batch, mesh: Mesh):
    """Global arrays from this process's local batch (leading axis split over "data")."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def replicate(tree, mesh: Mesh):
    """Put a host/device tree on every device of the mesh (same value on every process)."""
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def local_copy(tree):
    """NumPy copies of replicated global arrays, readable on any process."""
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            x = x.addressable_data(0)
        return np.asarray(jax.device_get(x))
    return jax.tree.map(get, tree)
