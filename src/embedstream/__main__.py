from embedstream.cli import main

main()
