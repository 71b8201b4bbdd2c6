from phiv_data.cli import main

main()
