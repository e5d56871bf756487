"""walsmf: the WALS matrix factorization lab as an installable TensorFlow 1.15 package.

A training job installs this package from an sdist on top of TensorFlow
1.15, numpy and pandas (AI Platform's runtime 1.15 had them; the Vertex AI
container, cloud/Dockerfile, installs them).  install_requires holds only
what TensorFlow 1.15 itself leaves open (protobuf 4.x breaks its import) and threadpoolctl
(batch prediction's threads).  Extraction and the benchmarks need
more (extras "extract" and "bench"); the full pinned environment is
requirements.lock.  Serving (walsmf.serve, walsmf.predict) also runs on current Python and
TensorFlow: requirements-serve.lock.
"""
from setuptools import find_packages, setup

setup(
    name="walsmf",
    version="0.1.0",
    description="WALS collaborative filtering on Google Analytics 360 sessions (TensorFlow 1.15)",
    packages=find_packages(include=["walsmf", "walsmf.*"]),
    # training needs TensorFlow 1.15, so Python 3.7 (and only it needs install_requires); serving runs on current
    # Python too
    python_requires=">=3.7",
    install_requires=['protobuf>=3.6.1,<4; python_version < "3.8"', 'threadpoolctl>=3.1; python_version < "3.8"'],
    extras_require={
        "extract": ["google-cloud-bigquery==3.30.0", "db-dtypes==1.4.2", "pyarrow==11.0.0",
                    "duckdb==1.2.2", "sqlglot==26.9.0"],
        "bench": ["implicit==0.7.2"],
        "tuning": ["cloudml-hypertune==0.1.0.dev6"],
        "serve": ["gunicorn>=23.0.0", "uvicorn>=0.22.0", "uvloop>=0.18.0", "httptools>=0.6.0",
                  'uvicorn-worker>=0.4.0; python_version >= "3.9"'],
    },
)
