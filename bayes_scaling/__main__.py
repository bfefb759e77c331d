from bayes_scaling.cli import main

main()
