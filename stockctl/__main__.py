from stockctl.cli import main

main()
