"""Installs megatron_glmd, kernels and tools, and builds the pybind11 data helpers.

torch is required but not pinned: a CPU machine installs the CPU build first
(see README), a GPU cluster keeps the CUDA build it already has. apex is optional.
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

ext_modules = [
    Pybind11Extension("megatron_glmd.data._helpers", ["megatron_glmd/data/helpers.cpp"],
                      cxx_std=17, extra_compile_args=["-O3"]),
]

setup(
    name="megatron-glmd",
    version="0.1.0",
    description="Tensor- and pipeline-parallel GLM distillation (GLMD) with vocabulary compression",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["megatron_glmd*", "kernels*", "tools*"]),
    package_data={"megatron_glmd": ["config/presets/*.yaml"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
    install_requires=[
        "torch>=2.1",
        "numpy>=1.23",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "sentencepiece>=0.1.99",
        "safetensors>=0.4",   # the vocabulary-compression artifact's tensors; hub-layout checkpoints
        "tokenizers>=0.15",   # GLM's GPT-2 BPE vocabulary
        "triton>=2.1; platform_system == 'Linux'",
    ],
    extras_require={
        # deepspeed's own setup imports torch, so it comes after torch is installed.
        "train": ["deepspeed>=0.14", "tensorboard>=2.10"],
        # transformers: the reference of the Llama/Qwen2/Mistral conversion tests. 5.25 and later require
        # Hugging Face's `kernels` distribution, whose top-level package shadows this project's `kernels`
        # (the editable finder comes after site-packages), so they are excluded.
        "dev": ["pytest>=7", "deepspeed>=0.14", "tensorboard>=2.10", "matplotlib>=3.5", "pandas>=1.5",
                "transformers>=5.20,<5.25"],
    },
    entry_points={
        "console_scripts": [
            "glmd-model-info=megatron_glmd.cli.model_info:main",
            "glmd-train=megatron_glmd.cli.train:main",
            "glmd-launch-plan=megatron_glmd.cli.launch_plan:main",
            "glmd-quickstart=megatron_glmd.cli.quickstart:main",
            "glmd-task-demo=megatron_glmd.cli.task_demo:main",
        ],
    },
)
