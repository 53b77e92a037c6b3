"""The catalog: what iga knows about its samplers, schedules and guidance modes, stated once, importing nothing.

The recipe layer, the guard, provenance labels, the CLI and the sampling engine all read these tables; the
engine's registry only maps names to functions. Keeping the catalog free of torch and of every other iga module
lets the lowest layers (recipe validation, `iga --help`) use it without loading the engine.
"""

from iga.catalog.options import CFG_VARIANTS, OptionSpec, option_problems, sampler_options

__all__ = ["CFG_VARIANTS", "OptionSpec", "option_problems", "sampler_options"]
