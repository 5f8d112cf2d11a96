"""Build and install minitorch_nn.

The pure-Python package (reference ops, modules, init) needs nothing but torch at run time.
The compiled extension (``csrc/``) will be added here with ``torch.utils.cpp_extension``;
because that build imports torch, install with an existing torch and without build isolation,
so pip does not download a second (multi-GB) torch into a temporary build environment:

    pip install --no-build-isolation -e ".[test]"
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (ROOT / "minitorch_nn" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="minitorch_nn",
    version=VERSION,
    description="torch.nn building blocks from scratch: readable references, gradchecked, benchmarked",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["minitorch_nn", "minitorch_nn.*"]),
    install_requires=["torch>=2.5", "numpy"],
    extras_require={
        "test": ["pytest>=8.0", "hypothesis>=6.100"],
        "lint": ["ruff==0.17.6"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Education",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
