"""Stand-ins for the landmark models of LatentSync 1.0 and 1.5: face_alignment and mediapipe.

Loaded by path by harness.py in the tree's interpreter (standalone: numpy only). With synthetic
weights the face is where verify drew it, so these answer with fixed landmarks, every frame, in
each library's own result layout, and never download a model:

- ``face_alignment``: ``FaceAlignment(LandmarksType.TWO_D, flip_input=False, device=...)`` and
  ``.get_landmarks(image)``, a list with one (68, 2) array (the iBUG-68 layout: jaw 0-16, brows
  17-26, nose 27-35, eyes 36-47, mouth 48-67). face_alignment fetches its networks from the
  internet on first use, so the whole module is stood in, installed or not.
- ``mediapipe``: ``solutions.face_mesh.FaceMesh(static_image_mode=True)`` with ``.process(rgb)``
  (``multi_face_landmarks[0].landmark[i].x/.y``, normalised, 478 points) and ``.close()``;
  ``solutions.face_detection.FaceDetection`` likewise. When the real mediapipe imports, only these
  two classes are replaced (its module stays real); otherwise a stand-in module provides them.
"""

from __future__ import annotations

import enum
import importlib
import sys
import types
from collections.abc import Callable

# iBUG-68 indices of the points verify places (the rest sit at the face centre).
IBUG_LEFT_BROW = range(17, 22)
IBUG_RIGHT_BROW = range(22, 27)
IBUG_NOSE = range(27, 36)
IBUG_MOUTH = range(48, 68)
# mediapipe face-mesh indices of the same features (its canonical 478-point topology).
MESH_LEFT_BROW = (46, 52, 53, 55, 63, 65, 66, 70, 71, 105, 107)
MESH_RIGHT_BROW = (276, 282, 283, 285, 293, 295, 296, 300, 301, 334, 336)
MESH_NOSE = (1, 2, 4, 5, 6, 45, 75, 97, 168, 195, 197, 275, 305, 326)
MESH_MOUTH = (0, 13, 14, 17, 37, 39, 61, 78, 82, 84, 87, 181, 267, 269, 291, 308, 312, 314, 317, 405)
MESH_POINTS = 478

Marks = Callable[[int, int], dict]


def _image_size(image) -> tuple[int, int]:
    """(width, height) of an HWC array or a CHW tensor, as the trees pass either."""
    shape = tuple(image.shape)
    if len(shape) == 3 and shape[0] in (1, 3) and shape[2] not in (1, 3, 4):
        return int(shape[2]), int(shape[1])
    return int(shape[1]), int(shape[0])


def ibug68(width: int, height: int, marks: Marks):
    import numpy as np

    where = marks(width, height)
    points = np.tile(np.array([[width / 2, height / 2]], np.float32), (68, 1))
    points[list(IBUG_LEFT_BROW)] = where["left_brow"]
    points[list(IBUG_RIGHT_BROW)] = where["right_brow"]
    points[list(IBUG_NOSE)] = where["nose"]
    points[list(IBUG_MOUTH)] = where["mouth"]
    return points


def mesh478(width: int, height: int, marks: Marks):
    """Normalised (x, y, z) of the 478 mesh points."""
    import numpy as np

    where = marks(width, height)
    points = np.tile(np.array([[0.5, 0.5, 0.0]], np.float32), (MESH_POINTS, 1))
    for indices, key in (
        (MESH_LEFT_BROW, "left_brow"),
        (MESH_RIGHT_BROW, "right_brow"),
        (MESH_NOSE, "nose"),
        (MESH_MOUTH, "mouth"),
    ):
        x, y = where[key]
        points[list(indices), 0] = x / width
        points[list(indices), 1] = y / height
    return points


def face_alignment_module(marks: Marks) -> types.ModuleType:
    module = types.ModuleType("face_alignment")
    module.__doc__ = "lsync-port verify: a stand-in for face_alignment (fixed landmarks, no download)."
    module.__version__ = "1.4.1+lsync-port-standin"
    module.LSYNC_PORT_STANDIN = True

    class LandmarksType(enum.IntEnum):
        TWO_D = 1
        TWO_HALF_D = 2
        THREE_D = 3
        _2D = 1  # the pre-1.4 spellings
        _2halfD = 2
        _3D = 3

    class FaceAlignment:
        def __init__(
            self,
            landmarks_type,
            network_size=4,
            device="cuda",
            flip_input=False,
            face_detector="sfd",
            **kwargs,
        ):
            if not isinstance(landmarks_type, LandmarksType):
                raise TypeError(f"landmarks_type must be a face_alignment.LandmarksType, got {landmarks_type!r}")
            import torch

            self.landmarks_type = landmarks_type
            self.device = str(device)
            self.flip_input = flip_input
            # face_alignment loads its networks onto `device` here: a device torch cannot use fails
            # now, as it would there ("Torch not compiled with CUDA enabled" on a Mac).
            torch.zeros(1, device=device)

        def get_landmarks(self, image_or_path, detected_faces=None, return_bboxes=False, return_landmark_score=False):
            return self.get_landmarks_from_image(image_or_path, detected_faces, return_bboxes, return_landmark_score)

        def get_landmarks_from_image(
            self, image, detected_faces=None, return_bboxes=False, return_landmark_score=False
        ):
            width, height = _image_size(image)
            landmarks = [ibug68(width, height, marks)]
            if not (return_bboxes or return_landmark_score):
                return landmarks
            import numpy as np

            box = np.array([0.18 * width, 0.1 * height, 0.82 * width, 0.94 * height, 0.99], np.float32)
            return landmarks, [np.ones(68, np.float32)], [box]

    module.LandmarksType = LandmarksType
    module.FaceAlignment = FaceAlignment
    return module


def _landmark_list(points):
    landmark = [types.SimpleNamespace(x=float(x), y=float(y), z=float(z)) for x, y, z in points]
    return types.SimpleNamespace(landmark=landmark)


def face_mesh_class(marks: Marks):
    class FaceMesh:
        """mediapipe.solutions.face_mesh.FaceMesh with fixed landmarks."""

        def __init__(
            self,
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        ):
            self.closed = False

        def process(self, image):
            if self.closed:
                raise ValueError("FaceMesh.process() after close()")
            width, height = _image_size(image)
            return types.SimpleNamespace(multi_face_landmarks=[_landmark_list(mesh478(width, height, marks))])

        def close(self):
            self.closed = True

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    return FaceMesh


def face_detection_class():
    class FaceDetection:
        """mediapipe.solutions.face_detection.FaceDetection: the face verify drew."""

        def __init__(self, model_selection=0, min_detection_confidence=0.5):
            self.closed = False

        def process(self, image):
            box = types.SimpleNamespace(xmin=0.18, ymin=0.1, width=0.64, height=0.84)
            location = types.SimpleNamespace(relative_bounding_box=box)
            return types.SimpleNamespace(detections=[types.SimpleNamespace(score=[0.99], location_data=location)])

        def close(self):
            self.closed = True

    return FaceDetection


def mediapipe_module(marks: Marks) -> types.ModuleType:
    module = types.ModuleType("mediapipe")
    module.__doc__ = "lsync-port verify: a stand-in for mediapipe (fixed face-mesh landmarks)."
    module.__version__ = "0.10.11+lsync-port-standin"
    module.LSYNC_PORT_STANDIN = True
    solutions = types.ModuleType("mediapipe.solutions")
    face_mesh = types.ModuleType("mediapipe.solutions.face_mesh")
    face_detection = types.ModuleType("mediapipe.solutions.face_detection")
    face_mesh.FaceMesh = face_mesh_class(marks)
    face_detection.FaceDetection = face_detection_class()
    solutions.face_mesh, solutions.face_detection = face_mesh, face_detection
    module.solutions = solutions
    for name, value in (
        ("mediapipe", module),
        ("mediapipe.solutions", solutions),
        ("mediapipe.solutions.face_mesh", face_mesh),
        ("mediapipe.solutions.face_detection", face_detection),
    ):
        sys.modules[name] = value
    return module


def install(marks: Marks) -> dict:
    """Put the stand-ins in place before the tree imports them; says what was stood in."""
    sys.modules["face_alignment"] = face_alignment_module(marks)
    try:
        real = importlib.import_module("mediapipe")
        solutions = real.solutions  # an attribute (mediapipe.python.solutions), not a submodule
        solutions.face_mesh, solutions.face_detection  # noqa: B018 (both are what the trees use)
    except Exception:  # not installed, or a broken install (protobuf versions): stand in for it all
        mediapipe_module(marks)
        return {"face_alignment": "stand-in module", "mediapipe": "stand-in module"}
    solutions.face_mesh.FaceMesh = face_mesh_class(marks)
    solutions.face_detection.FaceDetection = face_detection_class()
    version = getattr(real, "__version__", "?")
    return {
        "face_alignment": "stand-in module",
        "mediapipe": f"mediapipe {version}, its FaceMesh stood in",
    }
