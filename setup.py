import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_requirements(name):
    with open(os.path.join(HERE, name)) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def read_version():
    scope = {}
    with open(os.path.join(HERE, "label_studio_ml", "__init__.py")) as f:
        exec(f.read(), scope)
    return scope["__version__"]


setup(
    name="label-studio-ml",
    version=read_version(),
    description="Label Studio ML backend SDK: serve any model to Label Studio, plus a YOLO backend",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists(os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["label_studio_ml", "label_studio_ml.*"]),
    include_package_data=True,
    package_data={"label_studio_ml": ["default_configs/*", "default_configs/.*"]},
    python_requires=">=3.9",
    install_requires=read_requirements("requirements.txt"),
    entry_points={"console_scripts": ["label-studio-ml=label_studio_ml.server:main"]},
)
