from adaptir_cli.cli.app import main

main()
