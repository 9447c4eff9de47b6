from notification_service.entrypoints.cli import main

main()
