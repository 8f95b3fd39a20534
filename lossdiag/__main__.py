from lossdiag.cli import main

main(prog_name="lossdiag")
