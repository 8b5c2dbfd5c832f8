"""Synthetic brain datasets: the embedded default built from the MNI152 tissue maps (:mod:`.build`, from
:mod:`.anatomy`, :mod:`.individual`, :mod:`.lesions`, :mod:`.unseen`; sizes and families in :mod:`.sizes`)
and the seconds-to-write ellipsoid phantoms the tests use (:mod:`.phantom`)."""
