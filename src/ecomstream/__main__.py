from ecomstream.cli import run

run()
