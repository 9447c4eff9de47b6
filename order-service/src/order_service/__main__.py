from order_service.entrypoints.cli import main

main()
