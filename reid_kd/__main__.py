"""`python -m reid_kd ...` (and `torchrun ... -m reid_kd run ...`): the `reidkd` command line."""
from reid_kd.cli import main

main()
