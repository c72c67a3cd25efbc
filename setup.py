"""deal_ros: builds with colcon (ament_python, setuptools 59+) and with plain `pip install .`."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "deal_ros"
LAB = ["matplotlib>=3.5", "tqdm>=4.60", "scikit-image>=0.19"]
EXPORT = ["onnx==1.23.2", "onnxruntime==1.32.0", "ml_dtypes==0.5.4"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
    ],
    # The built-in ImageNet MobileNetV2 (model.pretrained_path: builtin), its licence and notice.
    package_data={PACKAGE: ["py.typed", "models/data/*.safetensors", "models/data/LICENSE", "models/data/*.md"]},
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.23,<2",
        "torch>=2.1",
        "opencv-python-headless>=4.6,<4.12",
        "safetensors>=0.4",
        "PyYAML>=5.4",
        "rosbags>=0.10",
    ],
    extras_require={
        # ONNX export and its onnxruntime check, never needed on the robot. onnx 1.23 needs ml_dtypes, whose 0.6
        # wants numpy 2: 0.5.4 is the last that keeps numpy < 2 (cv_bridge). Checked together on Python 3.11.
        "export": EXPORT,
        # The lab (deal_ros.lab: demo, ablate, bench; plots of `deal-ros train`; the SSC loss), never the robot.
        "lab": LAB,
        "test": ["pytest>=7", "ruff==0.17.6", "mypy==2.4.1", *EXPORT, *LAB],
    },
    zip_safe=True,
    maintainer="deal_ros maintainers",
    maintainer_email="maintainers@deal-ros.dev",
    description="Self-supervised onboard RGB-D segmentation with the Depth Edge Alignment Loss (DEAL).",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "deal-ros = deal_ros.cli:main",
            "trainer_node = deal_ros.ros.runner:trainer_main",
            "segmenter_node = deal_ros.ros.runner:segmenter_main",
            "onboard = deal_ros.ros.runner:onboard_main",
        ],
    },
)
