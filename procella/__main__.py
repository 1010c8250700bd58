from procella.cli import main

main()
