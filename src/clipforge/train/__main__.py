"""`python -m clipforge.train ...` / `torchrun --nproc_per_node N -m clipforge.train ...`.

Same arguments as `clipforge train`; under torchrun each process reads its rank from the
environment and joins the process group (gloo on CPU, NCCL on GPU).
"""

import argparse
import sys

from clipforge.train.command import add_arguments, run

parser = argparse.ArgumentParser(prog="python -m clipforge.train", description=__doc__)
add_arguments(parser)
sys.exit(run(parser.parse_args()))
