"""The lab: synthetic scenes, experiments and benchmarks (`deal-ros demo / ablate / bench`); not needed on the robot.

Needs the `lab` extra (matplotlib, tqdm, scikit-image): `pip install .[lab]`. Nothing in the library, the nodes
or the robot's commands imports it."""
