"""Core value helpers shared by the middle layers (sources, optimize, actuate), which may not
import each other (.importlinter): only the standard library and nothing above ``greencpn``'s
core. ``slurm``: Slurm's job-array task specs."""
