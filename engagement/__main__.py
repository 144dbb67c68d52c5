from engagement.cli import main

main()
