"""One-off studies: measurements that answered a question once (where the CPU time goes per op, which int8
calibration and ``--keep-float`` policy to declare, onnx2tf against litert-torch, BlazeFace's faces and
latency, ARM instructions per op) and whose recorded results in ``studies/results/`` the READMEs cite.
They are not part of mobilekit: this folder is not in setup.py, so it never ships in the wheel. Each runs
from the repository root as ``python -m studies.<name>`` and imports only mobilekit's public API; nothing
in mobilekit imports a study. ``studies/README.md`` lists them, the commands and their results files.
"""
