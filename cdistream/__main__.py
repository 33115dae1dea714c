"""python -m cdistream"""

from .cli import main

main()
