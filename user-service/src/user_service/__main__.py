from user_service.entrypoints.cli import main

main()
