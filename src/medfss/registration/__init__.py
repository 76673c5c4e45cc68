"""Atlas registration: the classic answer to "segment this scan from one labelled scan".

    ants       RegistrationConfig and register(): ANTsPy (affine, or affine + SyN) between two volumes
    predictor  RegistrationPredictor: the support's labels warped onto the query, several supports fused
               by majority voting (multi-atlas segmentation); a floor every few-shot model must beat

ANTsPy (``antspyx``) is an optional dependency (``pip install medfss[registration]``);
importing :mod:`medfss.registration.ants` without it raises a one-line
:class:`~medfss.errors.ConfigError` saying how to install it.
"""
