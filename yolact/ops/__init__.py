"""Operations shared by the input pipeline (``data/``) and the model (``yolact/``).

Boxes, anchors and matching (``box_ops``, ``anchors``), eval-time preprocessing (``preprocess``), image decoding
(``image_io``) and the label map (``label_map``). ``data/`` and the rest of ``yolact/`` import from here; nothing here
imports ``data/``, so data flows one way: ``yolact.ops`` ← ``data`` and ``yolact.ops`` ← ``yolact``.
"""
