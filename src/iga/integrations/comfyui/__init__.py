"""iga inside ComfyUI: a node pack (IGA Checkpoint Loader, IGA KSampler, IGA Save Image) and its installer.

    iga comfyui install PATH_TO_COMFYUI      # writes custom_nodes/iga_nodes/__init__.py, a loader of ``nodes``

``nodes`` is imported by ComfyUI only (it imports ComfyUI's modules); ``guard`` holds the node pack's logic that needs
no ComfyUI (requests, the guard, verification, presets), so iga stays importable and testable without ComfyUI.
"""
