"""optimist's optimizers: drop-in ``torch.optim.Optimizer`` classes, and a registry of names.

>>> import torch, optimist
>>> model = torch.nn.Linear(4, 1)
>>> opt = optimist.optim.Adam(model.parameters(), lr=1e-3)
>>> opt = optimist.optimizer("rmsprop", model.parameters(), lr=1e-2)
"""

from optimist.optim import functional
from optimist.optim.adadelta import Adadelta
from optimist.optim.adafactor import Adafactor
from optimist.optim.adagrad import Adagrad
from optimist.optim.adam import Adam, AdamW
from optimist.optim.adamax import Adamax
from optimist.optim.adan import Adan
from optimist.optim.ademamix import AdEMAMix
from optimist.optim.adopt import ADOPT
from optimist.optim.base import Optimizer
from optimist.optim.engine import RuleOptimizer
from optimist.optim.ftrl import Ftrl
from optimist.optim.lamb import LAMB
from optimist.optim.lars import LARS
from optimist.optim.lion import Lion
from optimist.optim.lookahead import Lookahead
from optimist.optim.muon import Muon
from optimist.optim.nadam import NAdam
from optimist.optim.prodigy import Prodigy
from optimist.optim.radam import RAdam
from optimist.optim.registry import OptimizerSpec, optimizer, optimizers, register, spec
from optimist.optim.rmsprop import RMSprop
from optimist.optim.rule import Rule, Slot
from optimist.optim.schedule_free import ScheduleFreeAdamW, ScheduleFreeSGD
from optimist.optim.sgd import SGD
from optimist.optim.soap import SOAP
from optimist.optim.sophia import SophiaG
from optimist.optim.transforms import chain

__all__ = [
    "ADOPT",
    "LAMB",
    "LARS",
    "SGD",
    "SOAP",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Adan",
    "AdEMAMix",
    "Ftrl",
    "Lion",
    "Lookahead",
    "Muon",
    "NAdam",
    "Optimizer",
    "OptimizerSpec",
    "Prodigy",
    "RAdam",
    "RMSprop",
    "Rule",
    "ScheduleFreeAdamW",
    "ScheduleFreeSGD",
    "SophiaG",
    "RuleOptimizer",
    "Slot",
    "chain",
    "functional",
    "optimizer",
    "optimizers",
    "register",
    "spec",
]
