"""ament_python package; also a plain pip-installable Python package."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "hybridnets_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # HyCTAS networks are built from their searched-architecture files.
    package_data={f"{PACKAGE}.core.models.hyctas": ["arch/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    # Run-time dependencies come from rosdep (package.xml) in a ROS workspace and from
    # requirements.txt in the project's venv; listing them here would make colcon's
    # console scripts reject the distro's python3-opencv and python3-torch.
    install_requires=["setuptools"],
    # `hybridnets fleet` (docs/fleet.md): the index (pyarrow) and a Ray cluster's workers.
    extras_require={"fleet": ["pyarrow>=14", "ray[default]==2.60.*"]},
    zip_safe=False,
    maintainer="hybridnets_ros maintainers",
    maintainer_email="maintainers@hybridnets-ros.dev",
    description="HybridNets detection, drivable-area and lane segmentation for ROS 2",
    license="MIT",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "hybridnets = hybridnets_ros.cli:main",
            "hybridnets_node = hybridnets_ros.ros.entry:main",
        ],
    },
)
