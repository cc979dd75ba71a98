"""python -m billtrail: the same as the `billtrail` command."""

from billtrail.cli import main

if __name__ == "__main__":
    main()
