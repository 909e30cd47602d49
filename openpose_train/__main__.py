from openpose_train.cli import main

main()
