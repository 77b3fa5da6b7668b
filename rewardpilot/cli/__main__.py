from rewardpilot.cli.main import main

main()
