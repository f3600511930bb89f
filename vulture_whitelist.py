"""Names in ``orchestrator`` that vulture cannot see used (``make lint`` runs vulture).

Vulture matches by name: an entry here keeps every attribute of that name alive, so the
list stays short and each entry says who uses the name. Dead code is deleted, not listed.
Tests are not scanned (code only a test calls would look alive); the few helpers kept for
tests on purpose are listed below, by the test that calls them. Click subcommands
(``@group.command``) are left to ``ignore_decorators`` in pyproject.toml.
"""

# ruff: noqa

# Protocols and signatures other code calls by keyword: the docker SDK's
# (docker_api.DockerAPI / ContainerCollection, apptainer_client's stand-in for it),
# hydra's ConfigLoader.get_group_options (config._GroupLister), __exit__'s traceback.
cap_drop, mem_limit, memswap_limit, nano_cpus, network_mode, privileged, security_opt
filters
results_filter
tb

# Attributes set for the standard library or the docker SDK to read.
_.external_attr, _.compress_type  # zipfile.ZipInfo (backends/ray/workdir)
_.uname, _.gname, _.linkname  # tarfile.TarInfo (image/tarball)
_.readable  # io.RawIOBase (image/bytecode._ChunkReader)
_.model  # docker.models.containers.ContainerCollection (docker_api)
_._version  # docker.APIClient: the API version the ping named (docker_api)
_.write_script, _.write_file, _.finalize_installation  # installer's destination (envlayer)

# Module __getattr__ (PEP 562): the lazy re-exports of orchestrator/__init__.
__getattr__

# Fields written to JSON through dataclasses.asdict and read by whoever reads the JSON.
_.magic  # image/interpreter.Interpreter: a probed fact, kept in its cached JSON
_.slurm_job_id  # backends/slurm/protocol.TaskOutcome: a task's outcome in the store
_.hashed_bytes  # inputs.ScanStats: public, for callers that measure a scan

# Kept for tests on purpose.
_.touch  # store.MemoryStore: ages an object (tests/test_records.py, tests/test_watch.py)
_.compose_many  # config.Composer (tests/test_config.py, test_sweep_expansion, test_search)
_.env_layer_entries  # image/envlayer (tests/test_envlayers.py)
_.list_run_files  # store/records.RunStore (tests/test_records.py)
_.record_fields  # backends/slurm/apptainer.SifImage (tests/test_apptainer.py)
