from event_store.entrypoints.cli import main

main()
